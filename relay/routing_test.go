package relay

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// report sends a HealthReport with the components given as name → status.
func (a *testAgent) report(comps map[string]linev1.HealthStatus) {
	a.t.Helper()
	r := &linev1.HealthReport{Status: linev1.HealthStatus_HEALTH_STATUS_OK}
	for name, st := range comps {
		r.Components = append(r.Components, &linev1.HealthComponent{Name: name, Status: st, Detail: name + " says so"})
		if st > r.Status {
			r.Status = st
		}
	}
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: r}})
}

const (
	down = linev1.HealthStatus_HEALTH_STATUS_DOWN
	ok   = linev1.HealthStatus_HEALTH_STATUS_OK
)

// An agent that reports its helper DOWN gets no command that needs the
// helper (typing here): it waits, queued, and GET /v1/agents says why; a
// plain send, which AppleScript can make, still goes. When the helper is
// back the held command is delivered without anything else happening.
func TestCommandsNeedingADownComponentAreHeldBack(t *testing.T) {
	srv := startRelay(t, t.TempDir(), Options{})
	line := "+15550000001"
	a := enrollAgent(t, srv, line)
	a.connect()
	a.report(map[string]linev1.HealthStatus{component.Helper: down, component.Automation: ok})
	eventually(t, "the report taken", func() bool { return len(agentView(t, srv, a.id).HeldBack) > 0 })

	if code, b := httpDo(t, srv, http.MethodPost, "/v1/commands", `{"id":"typing-1","line":"`+line+`","chat_guid":"iMessage;-;+15550100","typing":{"on":true}}`); code != http.StatusAccepted && code != http.StatusOK {
		t.Fatalf("POST typing: %d %s", code, b)
	}
	a.noCommand(300 * time.Millisecond)
	if v := getCommand(t, srv, "typing-1"); v.State != stateQueued {
		t.Fatalf("the held command is %s; want queued", v.State)
	}
	v := agentView(t, srv, a.id)
	if len(v.HeldBack) != 1 || v.HeldBack[0].Needs != component.Helper || !strings.Contains(v.HeldBack[0].Reason, "helper is DOWN (helper says so)") || !strings.Contains(v.HeldBack[0].Commands, "typing") {
		t.Fatalf("held_back %+v; want the helper, its detail and the commands it holds", v.HeldBack)
	}

	postCommand(t, srv, sendText("plain-1", line))
	if c := a.nextCommand(); c.GetId() != "plain-1" {
		t.Fatalf("got %q; want the plain send, which does not need the helper", c.GetId())
	}
	a.succeed("plain-1", "G-1")

	a.report(map[string]linev1.HealthStatus{component.Helper: ok, component.Automation: ok})
	if c := a.nextCommand(); c.GetId() != "typing-1" {
		t.Fatalf("got %q after the helper came back; want the held typing", c.GetId())
	}
	if v := agentView(t, srv, a.id); len(v.HeldBack) != 0 {
		t.Fatalf("held_back %+v after recovery; want none", v.HeldBack)
	}
}

// With both the helper and AppleScript's permission DOWN nothing can
// send: plain sends wait too. DEGRADED holds nothing.
func TestPlainSendsWaitWhenNothingCanSend(t *testing.T) {
	srv := startRelay(t, t.TempDir(), Options{})
	line := "+15550000001"
	a := enrollAgent(t, srv, line)
	a.connect()
	a.report(map[string]linev1.HealthStatus{component.Helper: down, component.Automation: down})
	eventually(t, "the report taken", func() bool { return len(agentView(t, srv, a.id).HeldBack) == 2 })
	postCommand(t, srv, sendText("plain-2", line))
	a.noCommand(300 * time.Millisecond)
	a.report(map[string]linev1.HealthStatus{component.Helper: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, component.Automation: down})
	if c := a.nextCommand(); c.GetId() != "plain-2" {
		t.Fatalf("got %q; want the send once the helper is only DEGRADED", c.GetId())
	}
}

// The journal DOWN holds every write; a read still goes.
func TestJournalDownHoldsWritesNotReads(t *testing.T) {
	all := []string{"send_text", "typing", "set_background"}
	held := unmetRequirements(&linev1.HealthReport{Components: []*linev1.HealthComponent{{Name: component.Journal, Status: down}}}, nil)
	write := &linev1.Command{Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "x"}}}
	read := &linev1.Command{Kind: &linev1.Command_GetMessage{GetMessage: &linev1.GetMessage{MessageGuid: "G"}}}
	if meets(needsOf(write), held) {
		t.Fatal("a send routes to an agent whose journal is DOWN")
	}
	if !meets(needsOf(read), held) {
		t.Fatal("a read is held back by the journal")
	}
	effect := &linev1.Command{Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "x", Effect: "slam"}}}
	helperDown := unmetRequirements(&linev1.HealthReport{Components: []*linev1.HealthComponent{{Name: component.Helper, Status: down}}}, all)
	if meets(needsOf(effect), helperDown) || !meets(needsOf(write), helperDown) {
		t.Fatal("with the helper DOWN an effect must wait and a plain send must go")
	}
	// An agent that offers no helper kind (it never had a helper) gets
	// them, and refuses them at once itself.
	if got := unmetRequirements(&linev1.HealthReport{Components: []*linev1.HealthComponent{{Name: component.Helper, Status: down}}}, []string{"send_text", "fetch_attachment"}); len(got) != 0 {
		t.Fatalf("held %v for an agent offering no helper kind", got)
	}
}

// An agent's own event (a Messages restart) is stored and listed for
// operators like any other, with no chat, and never reaches the platform
// API's event stream (it is no change in a chat).
func TestMessagesRestartedEventIsStoredNotRendered(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	ev := &linev1.Event{Sequence: 1, Key: "agent/messages_restarted/2026-12-01T12:00:00Z", Date: timestamppb.Now(),
		Payload: &linev1.Event_MessagesRestarted{MessagesRestarted: &linev1.MessagesRestartedEvent{Reason: "3 osascript runs in a row timed out", Outcome: "quit and reopened", Running: true}}}
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: ev}})
	if ack := a.nextAck(); ack != 1 {
		t.Fatalf("ack %d; want 1", ack)
	}
	page := getEvents(t, srv, "after=0")
	if len(page.Events) != 1 || !strings.Contains(string(page.Events[0].Event), `"messages_restarted"`) || !strings.Contains(string(page.Events[0].Event), "quit and reopened") {
		t.Fatalf("events %+v; want the restart", page.Events)
	}
	if _, err := renderEvent(ev, time.Now(), nil); !errors.Is(err, errNoPlatformEvent) {
		t.Fatalf("rendered for the platform API: %v", err)
	}
}
