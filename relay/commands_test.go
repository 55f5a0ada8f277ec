package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestCommandRouting(t *testing.T) {
	srv := startRelay(t, "", Options{})
	phone := enrollAgent(t, srv, "+15550001")
	email := enrollAgent(t, srv, " Bob@Example.com ")
	phone.connect()
	email.connect()

	// Routed by line, normalised: spaces trimmed, emails case-insensitive.
	if code, body := postCommand(t, srv, sendText("to-email", "  bob@EXAMPLE.com")); code != http.StatusAccepted || body["id"] != "to-email" || body["state"] != "queued" {
		t.Fatalf("POST: %d %v", code, body)
	}
	if got := email.nextCommand(); got.GetId() != "to-email" || got.GetSendText().GetText() != "hello" || got.GetDeadline() == nil {
		t.Fatalf("email agent got %v", got)
	}
	phone.noCommand(100 * time.Millisecond)
	v := waitState(t, srv, "to-email", "dispatched")
	if v.AgentID != email.id || v.Kind != "send_text" || v.Line != "bob@EXAMPLE.com" {
		t.Fatalf("view %+v", v)
	}

	// No agent has ever served the line: refused at once, not queued until
	// its deadline.
	code, body := postCommand(t, srv, sendText("nobody", "+15559999"))
	if e, _ := body["error"].(map[string]any); code != http.StatusNotFound || e["code"] != "NOT_FOUND" || !strings.Contains(e["message"].(string), "+15559999") {
		t.Fatalf("line nobody serves: %d %v", code, body)
	}

	// A known agent that is offline: the command waits for it.
	late := enrollAgent(t, srv, "+15559999")
	postCommand(t, srv, sendText("later", "+15559999"))
	phone.noCommand(100 * time.Millisecond)
	email.noCommand(0)
	if v := getCommand(t, srv, "later"); v.State != "queued" || v.AgentID != "" {
		t.Fatalf("view %+v", v)
	}
	late.connect()
	if got := late.nextCommand().GetId(); got != "later" {
		t.Fatalf("late agent got %q", got)
	}
	waitState(t, srv, "later", "dispatched")
}

func TestRepeatedIDIsOneCommand(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	code, _ := postCommand(t, srv, sendText("dup", "+15550001"))
	if code != http.StatusAccepted {
		t.Fatalf("first POST %d", code)
	}
	if a.nextCommand().GetId() != "dup" {
		t.Fatal("not dispatched")
	}
	// Same id, same body (a client's retry): 200 with the command's view.
	code2, b := httpDo(t, srv, http.MethodPost, "/v1/commands", sendText("dup", "+15550001"))
	if code2 != http.StatusOK {
		t.Fatalf("repeat POST %d %s", code2, b)
	}
	v := decode[CommandView](t, b)
	if v.ID != "dup" || v.Kind != "send_text" || v.Line != "+15550001" || v.State != "dispatched" {
		t.Fatalf("repeat view %+v", v)
	}
	// Same id, different body (a client bug): 409 with the command that
	// holds the id, and nothing changes.
	code3, b3 := httpDo(t, srv, http.MethodPost, "/v1/commands", `{"id":"dup","line":"+15550002","typing":{"on":true}}`)
	c := decode[conflictBody](t, b3)
	if code3 != http.StatusConflict || c.Error.Code != "ALREADY_EXISTS" || c.Command == nil || c.Command.Kind != "send_text" || c.Command.Line != "+15550001" {
		t.Fatalf("reused id: %d %s", code3, b3)
	}
	a.noCommand(150 * time.Millisecond)
	created, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "dup", Line: "+15550001", Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}})
	if !errors.Is(err, ErrIDConflict) || created {
		t.Fatalf("SubmitCommand reused id: created=%v err=%v", created, err)
	}
}

func TestCommandValidation(t *testing.T) {
	srv := startRelay(t, "", Options{})
	enrollAgent(t, srv, "+15550001")
	for name, body := range map[string]string{
		"no id":         `{"line":"+15550001","send_text":{"text":"x"}}`,
		"no line":       `{"id":"a","line":"  ","send_text":{"text":"x"}}`,
		"no kind":       `{"id":"a","line":"+15550001","chat_guid":"c"}`,
		"unknown field": `{"id":"a","line":"+15550001","send_text":{"text":"x"},"colour":"red"}`,
		"not json":      `{"id":`,
	} {
		code, body := postCommand(t, srv, body)
		e, _ := body["error"].(map[string]any)
		if code != http.StatusBadRequest || e["code"] != "INVALID_ARGUMENT" || e["message"] == "" {
			t.Errorf("%s: %d %v", name, code, body)
		}
	}
	// camelCase JSON names are accepted too.
	if code, body := postCommand(t, srv, `{"id":"camel","line":"+15550001","chatGuid":"iMessage;-;+15557654321","sendText":{"text":"x"}}`); code != http.StatusAccepted {
		t.Fatalf("camelCase: %d %v", code, body)
	}
	code, b := httpDo(t, srv, http.MethodGet, "/v1/commands/nope", "")
	if e := decode[errorBody](t, b); code != http.StatusNotFound || e.Error.Code != "NOT_FOUND" {
		t.Fatalf("unknown id: %d %s", code, b)
	}
	if _, err := srv.CommandView("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CommandView unknown: %v", err)
	}
	_, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "x", Line: "+1"})
	var me *command.Error
	if !errors.As(err, &me) || me.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("SubmitCommand without kind: %v", err)
	}
	// Any id works as a path segment when escaped (SDK ids are opaque).
	odd := "client/msg 1?x=%"
	if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: odd, Line: "+15550001", Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}}); err != nil {
		t.Fatal(err)
	}
	if v := getCommand(t, srv, url.PathEscape(odd)); v.ID != odd {
		t.Fatalf("odd id view %+v", v)
	}
	if code, _ := httpDo(t, srv, http.MethodGet, "/healthz", ""); code != http.StatusOK {
		t.Fatalf("healthz %d", code)
	}
}

func TestCommandLifecycle(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	postCommand(t, srv, sendText("c1", "+15550001"))
	a.nextCommand()
	waitState(t, srv, "c1", "dispatched")

	a.update("c1", linev1.CommandState_COMMAND_STATE_ACCEPTED, nil)
	waitState(t, srv, "c1", "accepted")
	a.update("c1", linev1.CommandState_COMMAND_STATE_IN_PROGRESS, &linev1.Progress{Stage: "uploading", Done: 3, Total: 10})
	v := waitState(t, srv, "c1", "in_progress")
	if v.Progress == nil || *v.Progress != (ProgressView{Stage: "uploading", Done: 3, Total: 10}) || v.Detail != "working" {
		t.Fatalf("progress %+v", v)
	}
	// A late ACCEPTED never moves it back.
	a.update("c1", linev1.CommandState_COMMAND_STATE_ACCEPTED, nil)
	a.succeed("c1", "msg-guid-1")
	v = waitState(t, srv, "c1", "succeeded")
	if !strings.Contains(string(v.Result), `"message_guid":"msg-guid-1"`) || !strings.Contains(string(v.Result), `"chat_guid"`) || v.Error != nil {
		t.Fatalf("result %s", v.Result)
	}
	// A second result for a final command is ignored.
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{CommandId: "c1",
		Outcome: &linev1.CommandResult_Error{Error: &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, Message: "late"}}}}})
	a.update("c1", linev1.CommandState_COMMAND_STATE_IN_PROGRESS, nil)
	// Use a later command as a barrier: frames are handled in order.
	postCommand(t, srv, sendText("c2", "+15550001"))
	a.nextCommand()
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{CommandId: "c2",
		Outcome: &linev1.CommandResult_Error{Error: &linev1.CommandError{
			Code: linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED, Message: "daily send quota reached",
			Capability: linev1.Capability_CAPABILITY_SEND_TEXT, RetryAfter: durationpb.New(90500 * time.Millisecond),
		}}}}})
	v2 := waitState(t, srv, "c2", "failed")
	if v2.Error == nil || *v2.Error != (ErrorView{Code: "QUOTA_EXCEEDED", Message: "daily send quota reached", Capability: "send_text", RetryAfterSeconds: 91}) || v2.Result != nil {
		t.Fatalf("error view %+v", v2.Error)
	}
	if v := getCommand(t, srv, "c1"); v.State != "succeeded" || v.Error != nil {
		t.Fatalf("final state changed: %+v", v)
	}

	// Another agent cannot report on a command it was not sent.
	b := enrollAgent(t, srv, "+15550002")
	b.connect()
	postCommand(t, srv, sendText("c3", "+15550001"))
	a.nextCommand()
	b.succeed("c3", "forged")
	b.update("c3", linev1.CommandState_COMMAND_STATE_IN_PROGRESS, nil)
	time.Sleep(100 * time.Millisecond)
	if v := getCommand(t, srv, "c3"); v.State != "dispatched" {
		t.Fatalf("another agent moved c3 to %s", v.State)
	}
}

func TestDeadlines(t *testing.T) {
	srv := startRelay(t, "", Options{DefaultCommandTimeout: 400 * time.Millisecond, ResultGrace: 300 * time.Millisecond})

	// Missing deadline: now + DefaultCommandTimeout; the line's agent is
	// known but offline.
	a := enrollAgent(t, srv, "+15550001")
	before := time.Now()
	postCommand(t, srv, sendText("queued-1", "+15550001"))
	v := getCommand(t, srv, "queued-1")
	if d := v.Deadline.Sub(before); d < 350*time.Millisecond || d > 2*time.Second {
		t.Fatalf("default deadline %s after submit", d)
	}
	v = waitState(t, srv, "queued-1", "failed")
	if *v.Error != (ErrorView{Code: "DEADLINE_EXCEEDED", Message: "no result before the deadline; last state: queued", LastState: "queued"}) {
		t.Fatalf("queued expiry %+v", v.Error)
	}

	a.connect()
	// Dispatched without an answer.
	deadline := timestamppb.New(time.Now().Add(300 * time.Millisecond))
	if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "disp", Line: "+15550001", Deadline: deadline, Kind: &linev1.Command_Typing{Typing: &linev1.Typing{}}}); err != nil {
		t.Fatal(err)
	}
	a.nextCommand()
	v = waitState(t, srv, "disp", "failed")
	if v.Error.Code != "DEADLINE_EXCEEDED" || v.Error.LastState != "dispatched" {
		t.Fatalf("dispatched expiry %+v", v.Error)
	}
	if v.UpdatedAt.Before(deadline.AsTime()) {
		t.Fatalf("failed at %s, before the deadline %s", v.UpdatedAt, deadline.AsTime())
	}

	// Accepted: the agent owns the deadline; the relay gives up only after
	// the grace period.
	deadline = timestamppb.New(time.Now().Add(200 * time.Millisecond))
	srv.SubmitCommand(context.Background(), &linev1.Command{Id: "acc", Line: "+15550001", Deadline: deadline, Kind: &linev1.Command_Typing{Typing: &linev1.Typing{}}})
	a.nextCommand()
	a.update("acc", linev1.CommandState_COMMAND_STATE_ACCEPTED, nil)
	waitState(t, srv, "acc", "accepted")
	time.Sleep(time.Until(deadline.AsTime()) + 100*time.Millisecond)
	if v := getCommand(t, srv, "acc"); v.State != "accepted" {
		t.Fatalf("accepted command failed inside the grace period: %+v", v)
	}
	v = waitState(t, srv, "acc", "failed")
	if v.Error.LastState != "accepted" || v.Error.Code != "DEADLINE_EXCEEDED" {
		t.Fatalf("accepted expiry %+v", v.Error)
	}
	// A result after the relay gave up does not change the final state.
	a.succeed("acc", "too-late")
	a.succeed("disp", "too-late")
	time.Sleep(100 * time.Millisecond)
	if v := getCommand(t, srv, "acc"); v.State != "failed" {
		t.Fatalf("late result changed a final state: %+v", v)
	}
}

func TestInFlightLimit(t *testing.T) {
	srv := startRelay(t, "", Options{})
	ctx := context.Background()
	a := enrollAgent(t, srv, "+15550001")
	for i := range maxInFlightCommands + 4 {
		if _, err := srv.SubmitCommand(ctx, &linev1.Command{Id: fmt.Sprintf("c%03d", i), Line: "+15550001", Kind: &linev1.Command_Typing{Typing: &linev1.Typing{}}}); err != nil {
			t.Fatal(err)
		}
	}
	a.connect()
	for i := range maxInFlightCommands {
		if got, want := a.nextCommand().GetId(), fmt.Sprintf("c%03d", i); got != want {
			t.Fatalf("command %d: got %s, want %s (oldest first)", i, got, want)
		}
	}
	a.noCommand(150 * time.Millisecond)
	// Each result frees one slot.
	a.succeed("c000", "g0")
	if got := a.nextCommand().GetId(); got != fmt.Sprintf("c%03d", maxInFlightCommands) {
		t.Fatalf("after one result got %s", got)
	}
	a.noCommand(100 * time.Millisecond)
}

func TestRedeliveryOnReconnect(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	for _, id := range []string{"r1", "r2", "r3"} {
		postCommand(t, srv, sendText(id, "+15550001"))
		a.nextCommand()
	}
	a.update("r2", linev1.CommandState_COMMAND_STATE_ACCEPTED, nil)
	a.update("r3", linev1.CommandState_COMMAND_STATE_IN_PROGRESS, nil)
	a.succeed("r1", "g1")
	waitState(t, srv, "r1", "succeeded")
	waitState(t, srv, "r3", "in_progress")
	// The stream drops; meanwhile another command is queued.
	a.close()
	eventually(t, "disconnect", func() bool { return !agentView(t, srv, a.id).Connected })
	postCommand(t, srv, sendText("r4", "+15550001"))

	a.connect()
	got := map[string]bool{}
	for range 3 {
		got[a.nextCommand().GetId()] = true
	}
	if !got["r2"] || !got["r3"] || !got["r4"] || got["r1"] {
		t.Fatalf("redelivered %v, want r2, r3 (unfinished) and r4 (new), not r1", got)
	}
	a.noCommand(100 * time.Millisecond)
	// The agent answers the repeat from its record: the lost result arrives.
	a.succeed("r3", "g3")
	waitState(t, srv, "r3", "succeeded")
	if v := getCommand(t, srv, "r2"); v.State != "accepted" {
		t.Fatalf("r2 %s", v.State)
	}
}

// A steady stream of submits whose deadlines are far off does not keep
// the sweeper turning: it wakes about once a second, as when idle. (It
// used to turn again for every submit that landed during a turn, which
// under load was every turn: a write transaction and the retention
// passes without a pause.)
func TestSubmitsDoNotSpinTheSweeper(t *testing.T) {
	srv := startRelay(t, "", Options{MetricsAddr: "127.0.0.1:0"})
	enrollAgent(t, srv, "+15550001") // never connects: the commands stay queued
	turns := func() float64 {
		v, ok := scrapeRelay(t, srv).Value("line_relay_sweeper_turns_total")
		if !ok {
			t.Fatal("no line_relay_sweeper_turns_total")
		}
		return v
	}
	before := turns()
	start := time.Now()
	n := 0
	for ; n < 5000 && time.Since(start) < 1500*time.Millisecond; n++ {
		if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: fmt.Sprintf("far-%d", n), Line: "+15550001",
			Deadline: timestamppb.New(time.Now().Add(time.Hour)), Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}}); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	// One turn a second, one more for a timer that fell due at the edge,
	// and a few for submits during a turn's read of the next deadline.
	if got, most := turns()-before, elapsed.Seconds()+4; got > most {
		t.Fatalf("%d submits in %v woke the sweeper %v times, want at most %.0f", n, elapsed.Round(time.Millisecond), got, most)
	}
	// A submit with a deadline before the sweeper's next look still
	// wakes it: the command fails at its deadline, not a second later.
	id := "near"
	if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: id, Line: "+15550001",
		Deadline: timestamppb.New(time.Now().Add(50 * time.Millisecond)), Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}}); err != nil {
		t.Fatal(err)
	}
	submitted := time.Now()
	for v, _ := srv.CommandView(id); v.State != stateFailed; v, _ = srv.CommandView(id) {
		if time.Since(submitted) > waitFor {
			t.Fatalf("the near command is still %s", v.State)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := time.Since(submitted); d > 800*time.Millisecond {
		t.Fatalf("a 50 ms deadline failed after %v: the submit did not wake the sweeper", d)
	}
}

// TestResultClaimsOnlyWhenTheWindowWasFull: a result claims the queue
// again only when the last claim filled the in-flight window (and so may
// have left commands behind). One command at a time, each is claimed once,
// by the submit's wake-up: a claim after every result as well would double
// the store's work per command and find nothing.
func TestResultClaimsOnlyWhenTheWindowWasFull(t *testing.T) {
	srv := startRelay(t, "", Options{MetricsAddr: "127.0.0.1:0"})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	const n = 20
	claims := func() float64 {
		v, _ := scrapeRelay(t, srv).Value("line_relay_command_claims_total")
		return v
	}
	// The stream's own claim at connect (the redelivery) comes after
	// Welcome, which is when connect returns: counted in before, not below.
	eventually(t, "the claim at connect", func() bool { return claims() >= 1 })
	before := claims()
	for i := range n {
		id := fmt.Sprintf("one%02d", i)
		postCommand(t, srv, sendText(id, "+15550001"))
		if got := a.nextCommand().GetId(); got != id {
			t.Fatalf("dispatched %s, want %s", got, id)
		}
		a.succeed(id, "g-"+id)
		waitState(t, srv, id, "succeeded")
	}
	if got := claims() - before; got > n || got < n/2 {
		t.Fatalf("%v claims for %d commands sent one at a time, want at most one each", got, n)
	}
}

// TestSentStaysBoundedWhenCommandsExpire: commands the sweeper fails never
// get a result on the stream, so the stream's record of what it sent
// would keep every one of them (and stay "full") for as long as the
// stream lives; past twice the in-flight limit it is read again from the
// store. An agent that answers nothing for days must not grow the relay.
func TestSentStaysBoundedWhenCommandsExpire(t *testing.T) {
	srv := startRelay(t, "", Options{ResultGrace: 10 * time.Millisecond})
	ctx := context.Background()
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	srv.hub.mu.Lock()
	ss := srv.hub.agents[a.id].session
	srv.hub.mu.Unlock()
	for round := range 3 {
		for i := range maxInFlightCommands {
			id := fmt.Sprintf("r%d-%03d", round, i)
			if _, err := srv.SubmitCommand(ctx, &linev1.Command{Id: id, Line: "+15550001", Deadline: timestamppb.New(time.Now().Add(300 * time.Millisecond)),
				Kind: &linev1.Command_Typing{Typing: &linev1.Typing{}}}); err != nil {
				t.Fatal(err)
			}
		}
		for range maxInFlightCommands {
			a.nextCommand()
		}
		waitState(t, srv, fmt.Sprintf("r%d-%03d", round, maxInFlightCommands-1), "failed")
	}
	// The handler goroutine owns sent; once it is done, this one may read.
	a.close()
	<-ss.done
	if n := len(ss.sent); n > 2*maxInFlightCommands {
		t.Fatalf("the stream still counts %d commands sent, after %d expired unanswered", n, 3*maxInFlightCommands)
	}
}
