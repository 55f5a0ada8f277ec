package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// An agent configured for a line another agent already holds is told so by
// the relay: it logs the refusal, says so in health, and gets none of the
// line's commands (issue 8, item 1).
func TestRefusedLineShowsInHealthAndGetsNoCommands(t *testing.T) {
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	owner := &countingDriver{}
	thief := &countingDriver{}
	run := func(a *Agent) chan error {
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx, nil) }()
		return done
	}
	ownerDone := run(enrolledAgent(t, r, t.TempDir(), owner, nil))
	agentWith := func(what string, pred func(relay.AgentView) bool) *relay.AgentView {
		var found *relay.AgentView
		var as []relay.AgentView
		if !eventually(10*time.Second, func() bool {
			as, _ = r.Agents(ctx)
			for _, a := range as {
				if pred(a) {
					found = &a
					return true
				}
			}
			return false
		}) {
			t.Fatalf("%s: not within 10 s: %+v", what, as)
		}
		return found
	}
	ownerView := agentWith("the owner holds the line", func(a relay.AgentView) bool { return a.Healthy && len(a.HeldLines) == 1 })
	thiefDone := run(enrolledAgent(t, r, t.TempDir(), thief, nil))
	tv := agentWith("the second agent reports the refusal in health", func(a relay.AgentView) bool {
		if a.ID == ownerView.ID || !a.Connected || a.LastHealth == nil {
			return false
		}
		for _, c := range a.LastHealth.Components {
			if c.Name == "relay" && c.Status == "DEGRADED" && strings.Contains(c.Detail, "bound to agent "+ownerView.ID) {
				return true
			}
		}
		return false
	})
	if len(tv.RefusedLines) != 1 || len(tv.HeldLines) != 0 {
		t.Fatalf("thief view %+v", tv)
	}
	for _, id := range []string{"l1", "l2", "l3"} {
		if _, err := r.SubmitCommand(ctx, sendText(id)); err != nil {
			t.Fatal(err)
		}
		if v := waitFinal(t, r, id, 10*time.Second); v.State != "succeeded" || v.AgentID != ownerView.ID {
			t.Fatalf("%s: %+v", id, v)
		}
	}
	if n := thief.count("l1") + thief.count("l2") + thief.count("l3"); n != 0 {
		t.Fatalf("the refused agent ran %d of the line's commands", n)
	}
	cancel()
	<-ownerDone
	<-thiefDone
}

// The agent's own door: a command from a relay that did not check it gets
// command.Check's error before any driver sees it.
func TestDispatcherRefusesMalformedHandlesBeforeTheDriver(t *testing.T) {
	d := &Dispatcher{lines: map[string]bool{testLine: true}, driver: &countingDriver{}, now: time.Now}
	c := sendText("bad-1")
	c.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"+1555abc"}}}
	if err := d.check(c); err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || !strings.Contains(err.Msg, "phone number") {
		t.Fatalf("malformed handle: %v", err)
	}
	c.Target = &linev1.Command_ChatGuid{ChatGuid: "not-a-guid"}
	if err := d.check(c); err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("malformed chat guid: %v", err)
	}
}
