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

// waitState polls the relay until the command reaches a final state.
func waitFinal(t *testing.T, r *testRelay, id string, limit time.Duration) *relay.CommandView {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		v, err := r.CommandView(id)
		if err == nil && (v.State == "succeeded" || v.State == "failed") {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
	v, _ := r.CommandView(id)
	t.Fatalf("command %s not final after %v: %+v", id, limit, v)
	return nil
}

func waitConnected(t *testing.T, r *testRelay, want bool, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		as, err := r.Agents(context.Background())
		if err == nil && len(as) == 1 && as[0].Connected == want && (!want || as[0].Healthy) {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	as, _ := r.Agents(context.Background())
	t.Fatalf("agent connected=%v not reached in %v: %+v", want, limit, as)
	return 0
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
	deadline := time.Now().Add(5 * time.Second)
	for {
		as, _ := r.Agents(ctx)
		if len(as) == 1 && as[0].LastDisconnect != nil && as[0].LastDisconnect.Graceful {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay did not see a Goodbye: %+v", as)
		}
		time.Sleep(10 * time.Millisecond)
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

func TestReconnectAfterRelayRestartWithinBackoffBound(t *testing.T) {
	t.Parallel()
	down := 30 * time.Second
	if testing.Short() {
		down = 2 * time.Second
	}
	dir := t.TempDir()
	r := startRelay(t, dir, "127.0.0.1:0")
	addr := r.GRPCAddr()
	// The real base (1 s) with a cap small enough that the bound is checkable
	// in a test: after 30 s away the backoff is at its cap.
	bo := &Backoff{Base: time.Second, Cap: 3 * time.Second}
	a := enrolledAgent(t, r, t.TempDir(), &countingDriver{}, bo)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second)

	r.Close()
	time.Sleep(down) // the relay is away long enough for backoff to reach its cap
	r = startRelay(t, dir, addr)
	defer r.Close()
	took := waitConnected(t, r, true, 10*time.Second)
	// Bound: one capped wait, plus the dial, Hello and a health check.
	if took > bo.Cap+2*time.Second {
		t.Fatalf("agent came back after %v; bound is the backoff cap %v plus a little", took, bo.Cap)
	}
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
	deadline := time.Now().Add(10 * time.Second)
	for drv.count("stuck") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second)         // the relay refuses a line no agent holds yet
	first, second := sendText("q-1"), sendText("q-2") // same chat: q-2 waits behind q-1
	r.SubmitCommand(ctx, first)
	r.SubmitCommand(ctx, second)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if v, _ := r.CommandView("q-2"); drv.count("q-1") == 1 && v != nil && v.State == "accepted" {
			break
		}
		time.Sleep(10 * time.Millisecond)
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
	deadline := time.Now().Add(5 * time.Second)
	for {
		as, _ := r.Agents(ctx)
		if len(as) == 1 && as[0].Connected && len(as[0].Capabilities) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the relay still sees %+v", as)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}
