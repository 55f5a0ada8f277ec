package chaos

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// journalDown waits until the relay shows the agent's journal component
// in the state want (down or not).
func journalDown(ctx context.Context, st *localstack.Stack, want bool, limit time.Duration) error {
	return localstack.WaitFor(ctx, limit, func() error {
		as, err := st.Operator.Agents(ctx)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.LastHealth == nil {
				continue
			}
			for _, c := range a.LastHealth.Components {
				if c.Name == "journal" && (c.Status == "DOWN") == want {
					return nil
				}
			}
		}
		return errors.New("the journal's health is not there yet")
	})
}

// TestJournalUnwritable makes every write to state.db fail for a while (an
// injected write error, as a full or failing disk gives) while sends and
// incoming messages go on: the agent takes no command it cannot record
// (each answered UNAVAILABLE, nothing sent), shows the journal DOWN in
// health, keeps incoming messages in chat.db until it can record them, and
// recovers by itself when writes work again.
func TestJournalUnwritable(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	n := scale(10, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fault := filepath.Join(t.TempDir(), "journal-write-fails")
	st := startWith(ctx, t, localstack.Options{
		RelayArgs: []string{"--health-interval", "1s"},
		AgentArgs: []string{"--sim-reply-delay", "30s"},
		AgentEnv:  []string{"LINE_AGENT_FAULT_JOURNAL_WRITE=" + fault},
	})
	line := st.Agent.Lines[0]
	w := writer(t, st)

	if err := os.WriteFile(fault, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	during := make([]*linev1.Command, n)
	for i := range during {
		during[i] = sendText("diskfault", i, line)
	}
	submitAll(ctx, t, st, during, 10*time.Millisecond)
	texts := receive(ctx, t, w, peers[3], "while state.db fails", n)
	if err := journalDown(ctx, st, true, 30*time.Second); err != nil {
		t.Errorf("health never showed the journal DOWN: %v", err)
	}
	fin := finals(ctx, st, during, time.Minute)
	for _, c := range during {
		if v := fin[c.Id]; v == nil || v.State != "failed" || v.Error == nil || v.Error.Code != "UNAVAILABLE" {
			t.Errorf("%s while state.db could not record it: %+v, want failed UNAVAILABLE", c.Id, v)
		}
	}

	if err := os.Remove(fault); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	if err := journalDown(ctx, st, false, 30*time.Second); err != nil {
		t.Errorf("the journal did not come back: %v", err)
	}
	after := make([]*linev1.Command, n)
	for i := range after {
		after[i] = sendText("diskok", i, line)
	}
	submitAll(ctx, t, st, after, 0)
	all := append(append([]*linev1.Command{}, during...), after...)
	fin = finals(ctx, st, all, 2*time.Minute)
	for _, c := range after {
		if v := fin[c.Id]; v == nil || v.State != "succeeded" {
			t.Errorf("%s after the fault: %+v, want succeeded", c.Id, v)
		}
	}
	r := judge(t, all, fin, outgoingTexts(ctx, t, st.ChatDB()))
	lost, dup := inboundOnce(ctx, t, st, texts, 2*time.Minute)
	r.lost, r.duplicated = r.lost+lost, r.duplicated+dup
	r.commands += len(texts)
	r.fault, r.runs, r.recover = "state.db refuses every write", 1, []time.Duration{time.Since(at)}
	r.note = "sends during the fault answered UNAVAILABLE, nothing sent; recover: writes back to every result"
	record(t, r)
}
