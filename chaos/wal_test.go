package chaos

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/sim"
)

// TestWALRecreated deletes and re-creates chat.db's WAL again and again
// while messages arrive, as Messages does each time it restarts: the
// reader holding the old file must notice (a new inode; a watcher on the
// old file goes deaf) and go on, and every message arrives once, in order.
// The agent runs the macos driver, a reader only, so the test's writer is
// chat.db's one long-lived writer, as Messages is on a Mac.
func TestWALRecreated(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	rounds, per := scale(3, 10), scale(30, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, _, chatDB := macAgent(ctx, t, filepath.Join(t.TempDir(), "never"), "FAKEOSA_HANG")
	w, err := sim.Create(chatDB, sim.WithLine(st.Agent.Lines[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var texts []string
	var recov []time.Duration
	for r := range rounds {
		texts = append(texts, receive(ctx, t, w, peers[r%len(peers)], fmt.Sprintf("wal round %d", r), per)...)
		at := time.Now()
		if err := w.RecreateWAL(ctx); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		// The first message after the new WAL must get through.
		probe := receive(ctx, t, w, peers[0], fmt.Sprintf("after wal %d", r), 1)
		if c, _ := storedInbound(ctx, t, st, probe, time.Minute); c[probe[0]] == 0 {
			t.Fatalf("round %d: nothing arrived after the WAL was re-created", r)
		}
		recov = append(recov, time.Since(at))
		texts = append(texts, probe...)
	}
	lost, dup := inboundOnce(ctx, t, st, texts, 2*time.Minute)
	r := result{fault: "chat.db's WAL deleted and re-created", runs: rounds, commands: len(texts), recover: recov,
		note: "the agent only reads chat.db (macos driver); recover: new WAL to the next message stored"}
	r.lost, r.duplicated = r.lost+lost, r.duplicated+dup
	record(t, r)
}
