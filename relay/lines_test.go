package relay

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The attack from the adversarial run: a second agent, enrolled with the
// fleet's project token, announces a line a healthy agent already serves.
// It must get none of the line's commands, its results and events for the
// line must not count, and the operator and the agent must be told.
func TestSecondAgentCannotTakeOverALine(t *testing.T) {
	srv := startRelay(t, "", Options{})
	tok := projectToken(t, srv)
	owner := enrollWith(t, srv, tok, "+15550000001")
	owner.connect()
	thief := enrollWith(t, srv, tok, "+1 555-000-0001")
	w := thief.connect()
	if len(w.GetRefusedLines()) != 1 || w.GetRefusedLines()[0].GetLine() != "+1 555-000-0001" ||
		!strings.Contains(w.GetRefusedLines()[0].GetReason(), owner.id) || !strings.Contains(w.GetRefusedLines()[0].GetReason(), "line-relay line move") {
		t.Fatalf("Welcome refused lines %v", w.GetRefusedLines())
	}

	for i := range 10 {
		id := "c" + string(rune('0'+i))
		if code, body := postCommand(t, srv, sendText(id, "+15550000001")); code != http.StatusAccepted {
			t.Fatalf("POST %s: %d %v", id, code, body)
		}
		if got := owner.nextCommand().GetId(); got != id {
			t.Fatalf("owner got %q, want %q", got, id)
		}
	}
	thief.noCommand(200 * time.Millisecond)

	// A made-up result for the owner's command is ignored.
	thief.succeed("c0", "forged-guid")
	// An event for the owner's line from the thief is dropped, though the
	// thief's sequence moves on (it is acknowledged, so it is not resent).
	thief.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: &linev1.Event{
		Sequence: 1, Key: "forged/message/0", Line: "+15550000001", ChatGuid: "iMessage;-;+15557654321", MessageGuid: "forged",
		Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{Text: "forged", Sender: "+15557654321"}},
	}}})
	if got := thief.nextAck(); got != 1 {
		t.Fatalf("thief ack %d", got)
	}
	owner.succeed("c1", "real-guid")
	waitState(t, srv, "c1", "succeeded")
	if v := getCommand(t, srv, "c0"); v.State != "dispatched" || v.AgentID != owner.id {
		t.Fatalf("c0 after a forged result: %+v", v)
	}
	page, err := srv.Events(context.Background(), 0, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 0 {
		t.Fatalf("forged event stored: %+v", page.Events)
	}

	// The operator sees who holds the line and why the thief was refused.
	tv := agentView(t, srv, thief.id)
	if len(tv.HeldLines) != 0 || len(tv.RefusedLines) != 1 || !strings.Contains(tv.RefusedLines[0].Reason, "bound to agent "+owner.id) {
		t.Fatalf("thief view %+v", tv)
	}
	if ov := agentView(t, srv, owner.id); len(ov.HeldLines) != 1 || ov.HeldLines[0] != "+15550000001" {
		t.Fatalf("owner view %+v", ov)
	}
}

// A token made with --lines lets its agents serve those lines only.
func TestTokenLinesBoundWhatAnAgentMayServe(t *testing.T) {
	srv := startRelay(t, "", Options{})
	tok, err := srv.CreateProjectToken(context.Background(), "+15550000001", "(555) 000-0002")
	if err != nil {
		t.Fatal(err)
	}
	a := enrollWith(t, srv, tok, "+15550000001", "+15550000002", "+15550000009")
	w := a.connect()
	if len(w.GetRefusedLines()) != 1 || w.GetRefusedLines()[0].GetLine() != "+15550000009" || !strings.Contains(w.GetRefusedLines()[0].GetReason(), "enrollment token") {
		t.Fatalf("refused %v", w.GetRefusedLines())
	}
	if code, _ := postCommand(t, srv, sendText("ok", "+1 (555) 000-0002")); code != http.StatusAccepted {
		t.Fatalf("allowed line refused: %d", code)
	}
	if got := a.nextCommand().GetId(); got != "ok" {
		t.Fatalf("got %q", got)
	}
	if code, _ := postCommand(t, srv, sendText("no", "+15550000009")); code != http.StatusNotFound {
		t.Fatalf("a line the token does not allow was accepted: %d", code)
	}
	if _, err := srv.CreateProjectToken(context.Background(), "not a number"); err == nil {
		t.Fatal("a token for a malformed line was created")
	}
}

// line move is the operator's way to give a bound line to another agent:
// the old holder stops getting its commands at once, the new one serves it
// from its next heartbeat without reconnecting.
func TestLineMove(t *testing.T) {
	srv := startRelay(t, "", Options{HeartbeatInterval: 100 * time.Millisecond})
	old := enrollAgent(t, srv, "+15550000001")
	old.connect()
	repl := enrollAgent(t, srv, "+15550000001")
	if w := repl.connect(); len(w.GetRefusedLines()) != 1 {
		t.Fatalf("replacement not refused: %v", w)
	}
	if _, err := srv.MoveLine(context.Background(), "+15550000001", "agt_nosuchagent"); !errors.Is(err, ErrAgentNotFound) {
		t.Fatalf("move to an unknown agent: %v", err)
	}
	from, err := srv.MoveLine(context.Background(), "+1 555 000 0001", repl.id)
	if err != nil || from != old.id {
		t.Fatalf("MoveLine: from %q, %v", from, err)
	}
	postCommand(t, srv, sendText("after-move", "+15550000001"))
	if got := repl.nextCommand().GetId(); got != "after-move" {
		t.Fatalf("new holder got %q", got)
	}
	old.noCommand(200 * time.Millisecond)
	lines, err := srv.Lines(context.Background())
	if err != nil || len(lines) != 1 || lines[0].AgentID != repl.id {
		t.Fatalf("lines %+v %v", lines, err)
	}
}

// A Hello naming a malformed line is refused outright.
func TestHelloWithMalformedLineIsRefused(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv)
	a.lines = []string{"+1; DROP TABLE"}
	a.open(a.token)
	a.send(a.hello())
	if err := a.ended(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("stream ended with %v", err)
	}
}

// A journal with a new epoch (state.db deleted or restored) numbers its
// events from 1 again; the relay restarts its sequence check for it and
// still drops events it already has by key.
func TestNewJournalEpochRestartsTheSequence(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550000001")
	hello := func(epoch string) *linev1.Welcome {
		a.open(a.token)
		h := a.hello()
		h.GetHello().JournalEpoch = epoch
		a.send(h)
		return a.expect(a.cur.welcome, "Welcome").GetWelcome()
	}
	if w := hello("epoch-1"); w.GetStoredEventSequence() != 0 {
		t.Fatalf("first stored %d", w.GetStoredEventSequence())
	}
	for i := uint64(1); i <= 5; i++ {
		a.event(i, "m"+string(rune('0'+i))+"/message/0", "old")
	}
	eventually(t, "5 events acked", func() bool { return a.nextAck() == 5 })
	a.close()
	if w := hello("epoch-1"); w.GetStoredEventSequence() != 5 {
		t.Fatalf("same journal: stored %d", w.GetStoredEventSequence())
	}
	a.close()
	w := hello("epoch-2")
	if w.GetStoredEventSequence() != 0 {
		t.Fatalf("new journal: stored %d, want 0", w.GetStoredEventSequence())
	}
	// The new journal re-reads chat.db: one event it already sent (same
	// key) and two new ones.
	a.event(1, "m5/message/0", "old")
	a.event(2, "n1/message/0", "new")
	a.event(3, "n2/message/0", "new")
	eventually(t, "new journal acked", func() bool { return a.nextAck() == 3 })
	page, err := srv.Events(context.Background(), 0, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 7 {
		t.Fatalf("%d events stored, want 7 (5 old, 2 new)", len(page.Events))
	}
}

// Bounds on every field at the first door (the adversarial run's 100,000
// character chat_guid reached a LIKE pattern; a deadline in 2263
// overflowed).
func TestSubmitBoundsEveryField(t *testing.T) {
	srv := startRelay(t, "", Options{})
	enrollAgent(t, srv, "+15550000001")
	long := strings.Repeat("x", 100000)
	for name, body := range map[string]string{
		"huge chat_guid":    `{"id":"a","line":"+15550000001","chat_guid":"` + long + `","send_text":{"text":"x"}}`,
		"huge id":           `{"id":"` + long + `","line":"+15550000001","send_text":{"text":"x"}}`,
		"huge handle":       `{"id":"a","line":"+15550000001","participants":{"handles":["` + long + `"]},"send_text":{"text":"x"}}`,
		"huge text":         `{"id":"a","line":"+15550000001","chat_guid":"iMessage;-;+15557654321","send_text":{"text":"` + strings.Repeat(long, 1) + strings.Repeat("y", 64<<10) + `"}}`,
		"deadline 2263":     `{"id":"a","line":"+15550000001","chat_guid":"iMessage;-;+15557654321","deadline":"2263-01-01T00:00:00Z","send_text":{"text":"x"}}`,
		"deadline in 1 yr":  `{"id":"a","line":"+15550000001","chat_guid":"iMessage;-;+15557654321","deadline":"` + time.Now().AddDate(1, 0, 0).UTC().Format(time.RFC3339) + `","send_text":{"text":"x"}}`,
		"malformed line":    `{"id":"a","line":"hello there","chat_guid":"iMessage;-;+15557654321","send_text":{"text":"x"}}`,
		"too many handles":  `{"id":"a","line":"+15550000001","participants":{"handles":[` + strings.Repeat(`"+15557654321",`, 64) + `"+15557654321"]},"send_text":{"text":"x"}}`,
		"huge subject":      `{"id":"a","line":"+15550000001","chat_guid":"iMessage;-;+15557654321","send_text":{"text":"x","subject":"` + strings.Repeat("s", 2000) + `"}}`,
		"huge rename":       `{"id":"a","line":"+15550000001","chat_guid":"iMessage;+;chat1","rename_group":{"name":"` + strings.Repeat("n", 2000) + `"}}`,
		"huge message_guid": `{"id":"a","line":"+15550000001","chat_guid":"iMessage;-;+15557654321","react":{"message_guid":"` + long + `","tapback":"love"}}`,
	} {
		code, b := postCommand(t, srv, body)
		e, _ := b["error"].(map[string]any)
		if code != http.StatusBadRequest || e["code"] != "INVALID_ARGUMENT" {
			t.Errorf("%s: %d %v", name, code, b)
		}
		if msg, _ := e["message"].(string); strings.Contains(msg, long[:100]) {
			t.Errorf("%s: the error repeats the value", name)
		}
	}
	_, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "z", Line: "+15550000001", Target: &linev1.Command_ChatGuid{ChatGuid: long}, Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}})
	var me *command.Error
	if !errors.As(err, &me) || me.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("SubmitCommand: %v", err)
	}
}

// wait=1e300 (and other absurd waits) waits the maximum, not zero.
func TestEventsWaitIsClamped(t *testing.T) {
	srv := startRelay(t, "", Options{})
	for _, w := range []string{"1e300", "1e10", "9223372037"} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.HTTPAddr()+"/v1/events?wait="+w, nil)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			t.Fatalf("wait=%s answered after %s with %d; it should still be waiting", w, time.Since(start), resp.StatusCode)
		}
	}
	for _, w := range []string{"-1", "NaN", "abc"} {
		if code, _ := httpDo(t, srv, http.MethodGet, "/v1/events?wait="+w, ""); code != http.StatusBadRequest {
			t.Errorf("wait=%s: %d", w, code)
		}
	}
}
