package chaos

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestStateDBDeleted deletes the agent's state.db (its journal and outbox)
// while messages it had read were not yet acknowledged by the relay, as a
// support script or a restore from an old backup does. The new journal
// reads chat.db again from where the relay's acknowledgements stood, so
// every message reaches the relay once. Full figure: 500 messages.
func TestStateDBDeleted(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes and kill -9")
	}
	n := scale(100, 500)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st := startStack(ctx, t)
	w := writer(t, st)
	// Some traffic the relay acknowledges, so it holds a chat.db cursor.
	before := receive(ctx, t, w, peers[0], "acknowledged", 20)
	if c, _ := storedInbound(ctx, t, st, before, time.Minute); len(c) != len(before) {
		t.Fatalf("only %d of %d messages reached the relay before the fault", len(c), len(before))
	}
	time.Sleep(time.Second) // the cursor mark follows its acknowledgement
	st.StopRelay()
	texts := receive(ctx, t, w, peers[0], "unacknowledged", n)
	time.Sleep(2 * time.Second) // read into the outbox, never acknowledged
	st.KillAgent()
	for _, f := range []string{"state.db", "state.db-wal", "state.db-shm"} {
		if err := os.Remove(filepath.Join(st.AgentDir, f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	at := time.Now()
	if err := st.StartRelay(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	lost, dup := inboundOnce(ctx, t, st, append(append([]string{}, before...), texts...), 3*time.Minute)
	r := result{fault: "state.db deleted with messages unacknowledged", runs: 1, commands: n,
		recover: []time.Duration{time.Since(at)}, note: "recover: restart to the last message stored"}
	r.lost, r.duplicated = r.lost+lost, r.duplicated+dup
	record(t, r)
}
