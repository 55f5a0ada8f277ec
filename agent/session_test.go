package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/messages"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// countingDriver stands in for Messages where the test is about the agent's
// own promises (at most once, drain, reconnect): it counts what it ran and can
// be made slow.
type countingDriver struct {
	mu    sync.Mutex
	runs  map[string]int
	delay time.Duration
	gate  chan struct{} // when set, Execute waits for it
	caps  []linev1.Capability
	// ran, when a waiter made it, is closed at the next run; guarded by mu.
	ran chan struct{}
}

func (d *countingDriver) Capabilities() []linev1.Capability {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.caps != nil {
		return d.caps
	}
	return []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}
}

func (d *countingDriver) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	d.mu.Lock()
	if d.runs == nil {
		d.runs = map[string]int{}
	}
	d.runs[cmd.GetId()]++
	if d.ran != nil {
		close(d.ran)
		d.ran = nil
	}
	gate := d.gate
	d.mu.Unlock()
	report(&linev1.CommandUpdate{State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS})
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case <-time.After(d.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &linev1.Snapshot{MessageGuid: "GUID-" + cmd.GetId(), ChatGuid: cmd.GetChatGuid(), Sent: true}, nil
}

func (d *countingDriver) count(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.runs[id]
}

// waitRun waits (bounded) until Execute has been called for id.
func (d *countingDriver) waitRun(t *testing.T, id string, limit time.Duration) {
	t.Helper()
	timeout := time.After(limit)
	for {
		d.mu.Lock()
		if d.runs[id] > 0 {
			d.mu.Unlock()
			return
		}
		if d.ran == nil {
			d.ran = make(chan struct{})
		}
		ran := d.ran
		d.mu.Unlock()
		select {
		case <-ran:
		case <-timeout:
			t.Fatalf("%s did not reach the driver within %v", id, limit)
		}
	}
}

var _ messages.Driver = (*countingDriver)(nil)

const testLine = "+15550000001"

type testRelay struct {
	*relay.Server
	dir string
	t   *testing.T
}

func startRelay(t *testing.T, dir, grpcAddr string) *testRelay {
	t.Helper()
	srv, err := relay.New(relay.Options{
		DataDir: dir, GRPCAddr: grpcAddr, HTTPAddr: "127.0.0.1:0",
		HeartbeatInterval: 200 * time.Millisecond, HealthCheckInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &testRelay{Server: srv, dir: dir, t: t}
}

// enrolledAgent enrolls a data dir with the relay and returns an agent ready
// to Run.
func enrolledAgent(t *testing.T, r *testRelay, dataDir string, drv messages.Driver, bo *Backoff) *Agent {
	t.Helper()
	ctx := context.Background()
	tok, err := r.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCredentials(dataDir); err == ErrNotEnrolled {
		if _, err := Enroll(ctx, EnrollOptions{DialOptions: DialOptions{Addr: r.GRPCAddr(), CAFile: r.CAFile()}, Token: tok, DataDir: dataDir}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{DataDir: dataDir, Lines: []string{testLine}, ShutdownGrace: 5 * time.Second}
	a, err := New(Options{Config: cfg, Backend: Backend{Name: "test", Driver: drv}, Logger: testLogger(t), Backoff: bo})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sendText(id string) *linev1.Command {
	return &linev1.Command{Id: id, Line: testLine, Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"},
		Deadline: timestamppb.New(time.Now().Add(20 * time.Second)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi " + id}}}
}

// waitFinal waits (bounded) until the relay has the command in a final
// state, and returns it.
func waitFinal(t *testing.T, r *testRelay, id string, limit time.Duration) *relay.CommandView {
	t.Helper()
	var v *relay.CommandView
	if !eventually(limit, func() bool {
		var err error
		v, err = r.CommandView(id)
		return err == nil && (v.State == "succeeded" || v.State == "failed")
	}) {
		t.Fatalf("command %s not final at the relay after %v: %+v", id, limit, v)
	}
	return v
}

// waitConnected waits (bounded) until the relay sees its one agent
// connected (and healthy) or not.
func waitConnected(t *testing.T, r *testRelay, want bool, limit time.Duration) {
	t.Helper()
	var as []relay.AgentView
	if !eventually(limit, func() bool {
		var err error
		as, err = r.Agents(context.Background())
		return err == nil && len(as) == 1 && as[0].Connected == want && (!want || as[0].Healthy)
	}) {
		t.Fatalf("agent connected=%v not reached in %v: %+v", want, limit, as)
	}
}

func TestSessionRunsCommandOnceAndShutsDownClean(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	drv := &countingDriver{delay: 5 * time.Millisecond}
	a := enrolledAgent(t, r, t.TempDir(), drv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, stop) }()
	waitConnected(t, r, true, 10*time.Second)

	cmd := sendText("once-1")
	if created, err := r.SubmitCommand(ctx, cmd); err != nil || !created {
		t.Fatalf("submit: %v %v", created, err)
	}
	if created, _ := r.SubmitCommand(ctx, cmd); created {
		t.Fatal("a repeated id created a second command")
	}
	v := waitFinal(t, r, "once-1", 10*time.Second)
	if v.State != "succeeded" {
		t.Fatalf("state %s: %+v", v.State, v.Error)
	}
	// A misrouted command fails with MISROUTED and never reaches Messages.
	mis := sendText("mis-1")
	mis.Line = "+15559999999"
	r.SubmitCommand(ctx, mis) // no agent serves it: stays queued
	if got := drv.count("once-1"); got != 1 {
		t.Fatalf("driver ran once-1 %d times, want 1", got)
	}

	close(stop)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("staged shutdown did not finish")
	}
	var as []relay.AgentView
	if !eventually(5*time.Second, func() bool {
		as, _ = r.Agents(ctx)
		return len(as) == 1 && as[0].LastDisconnect != nil && as[0].LastDisconnect.Graceful
	}) {
		t.Fatalf("relay did not see a Goodbye: %+v", as)
	}
}

func TestRedeliveredCommandAnsweredFromJournal(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	drv := &countingDriver{}
	dataDir := t.TempDir()
	a := enrolledAgent(t, r, dataDir, drv, nil)
	j := a.journal
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The agent already ran this id (before a lost result, say).
	cmd := sendText("dup-1")
	if rec, err := j.Begin(ctx, cmd); err != nil || rec != nil {
		t.Fatal(rec, err)
	}
	j.Finish(ctx, &linev1.CommandResult{CommandId: "dup-1", Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: "FIRST"}}})

	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second) // the relay refuses a line no agent holds yet
	r.SubmitCommand(ctx, cmd)
	v := waitFinal(t, r, "dup-1", 10*time.Second)
	if v.State != "succeeded" || drv.count("dup-1") != 0 {
		t.Fatalf("state %s, driver runs %d: want the recorded result and no run", v.State, drv.count("dup-1"))
	}
	if string(v.Result) == "" || !strings.Contains(string(v.Result), "FIRST") {
		t.Fatalf("result %s, want the recorded snapshot", v.Result)
	}
	cancel()
	<-done
}

// TestReconnectAfterRelayRestart: the agent comes back to a restarted
// line-relay by itself and commands flow on the new stream. How soon it comes
// back after a long outage (within one capped backoff wait) is checked on
// the fake clock: TestReconnectWithinTheBackoffCapAfterALongOutage.
func TestReconnectAfterRelayRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := startRelay(t, dir, "127.0.0.1:0")
	addr := r.GRPCAddr()
	bo := &Backoff{Base: 100 * time.Millisecond, Cap: time.Second}
	a := enrolledAgent(t, r, t.TempDir(), &countingDriver{}, bo)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second)

	r.Close()
	r = startRelay(t, dir, addr)
	defer r.Close()
	waitConnected(t, r, true, 10*time.Second)
	// Commands still flow on the new stream.
	r.SubmitCommand(ctx, sendText("after-restart"))
	if v := waitFinal(t, r, "after-restart", 10*time.Second); v.State != "succeeded" {
		t.Fatalf("after restart: %s %+v", v.State, v.Error)
	}
	cancel()
	<-done
}

func TestHardStopLeavesCommandInDoubtNotRerun(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	dataDir := t.TempDir()
	drv := &countingDriver{gate: make(chan struct{})}
	a := enrolledAgent(t, r, dataDir, drv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second) // the relay refuses a line no agent holds yet
	r.SubmitCommand(ctx, sendText("stuck"))
	drv.waitRun(t, "stuck", 10*time.Second)
	cancel() // hard stop while Messages "works" on it
	<-done

	drv2 := &countingDriver{}
	a2 := enrolledAgent(t, r, dataDir, drv2, nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { done <- a2.Run(ctx2, nil) }()
	v := waitFinal(t, r, "stuck", 10*time.Second)
	if v.State != "failed" || v.Error == nil || v.Error.Code != "IN_DOUBT" || drv2.count("stuck") != 0 {
		t.Fatalf("after restart: state %s error %+v runs %d; want IN_DOUBT and no re-run", v.State, v.Error, drv2.count("stuck"))
	}
	cancel2()
	<-done
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func TestQueuedButNeverStartedCommandRunsAfterRestart(t *testing.T) {
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	dataDir := t.TempDir()
	drv := &countingDriver{gate: make(chan struct{})}
	a := enrolledAgent(t, r, dataDir, drv, nil)
	a.o.Config.MaxChats = 1 // q-2 waits for the one running slot
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second) // the relay refuses a line no agent holds yet
	// Another chat: q-2 is recorded accepted at once (a command queued
	// behind another in its own chat is recorded only when its turn comes).
	first, second := sendText("q-1"), sendText("q-2")
	second.Target = &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557650002"}
	r.SubmitCommand(ctx, first)
	drv.waitRun(t, "q-1", 10*time.Second)
	r.SubmitCommand(ctx, second)
	var v *relay.CommandView
	if !eventually(10*time.Second, func() bool {
		v, _ = r.CommandView("q-2")
		return v != nil && v.State == "accepted"
	}) {
		t.Fatalf("q-2 not accepted at the relay: %+v", v)
	}
	cancel() // hard stop: q-1 is in Messages' hands, q-2 never started
	<-done

	drv2 := &countingDriver{}
	a2 := enrolledAgent(t, r, dataDir, drv2, nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { done <- a2.Run(ctx2, nil) }()
	if v := waitFinal(t, r, "q-2", 10*time.Second); v.State != "succeeded" || drv2.count("q-2") != 1 {
		t.Fatalf("never-started command: state %s runs %d; want it run once after the restart", v.State, drv2.count("q-2"))
	}
	if v := waitFinal(t, r, "q-1", 10*time.Second); v.Error == nil || v.Error.Code != "IN_DOUBT" || drv2.count("q-1") != 0 {
		t.Fatalf("started command: %+v runs %d; want IN_DOUBT, not re-run", v, drv2.count("q-1"))
	}
	cancel2()
	<-done
}

func TestChangedCapabilitiesAreAnnounced(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	drv := &countingDriver{}
	a := enrolledAgent(t, r, t.TempDir(), drv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second)

	// The helper connects: typing now works, and the relay must hear it.
	drv.mu.Lock()
	drv.caps = []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_TYPING}
	drv.mu.Unlock()
	var as []relay.AgentView
	if !eventually(5*time.Second, func() bool {
		as, _ = r.Agents(ctx)
		return len(as) == 1 && as[0].Connected && len(as[0].Capabilities) == 2
	}) {
		t.Fatalf("the relay still sees %+v", as)
	}
	cancel()
	<-done
}
