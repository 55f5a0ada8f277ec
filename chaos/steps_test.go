package chaos

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// journalSteps are the agent's crash points (agent/failpoint_chaos.go), in
// the order a command passes them.
var journalSteps = []struct{ point, what string }{
	{"before-record", "before the journal records it"},
	{"after-record", "recorded, not yet started"},
	{"before-driver", "marked running, before Messages"},
	{"before-driver@5ms", "in the middle of the driver"},
	{"after-driver", "after Messages, result not yet durable"},
}

// TestKillAtEveryJournalStep crashes the agent (SIGKILL from inside, at an
// exact step) while it runs a few sends, once per step, then starts it
// again: commands not started run once, started ones are reconciled
// against chat.db, and none is lost, doubled or acknowledged falsely.
func TestKillAtEveryJournalStep(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes and kill -9")
	}
	n := scale(4, 20)
	for _, step := range journalSteps {
		t.Run(step.point, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			dir := t.TempDir()
			st := startWith(ctx, t, localstack.Options{
				AgentArgs: []string{"--sim-reply-delay", "30s"},
				AgentEnv:  []string{"LINE_AGENT_FAILPOINT=" + step.point, "LINE_AGENT_FAILPOINT_MARKER=" + filepath.Join(dir, "fired")},
			})
			line := st.Agent.Lines[0]
			cmds := make([]*linev1.Command, n)
			for i := range cmds {
				cmds[i] = sendText("step-"+step.point, i, line)
			}
			submitAll(ctx, t, st, cmds, 0)
			if !st.AgentExited(30 * time.Second) {
				t.Fatalf("the crash point %s did not fire", step.point)
			}
			at := time.Now()
			if err := st.StartAgent(ctx); err != nil {
				t.Fatal(err)
			}
			fin := finals(ctx, st, cmds, 2*time.Minute)
			r := judge(t, cmds, fin, outgoingTexts(ctx, t, st.ChatDB()))
			r.fault, r.runs, r.recover = "agent killed "+step.what, 1, []time.Duration{time.Since(at)}
			r.note = "crash point " + step.point + "; recover: restart to every result"
			record(t, r)
		})
	}
}
