package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/pkg/capool"
	"github.com/line-agent/line-agent/pkg/pgtest"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// TestMain stops the PostgreSQL cluster of the store tests, if one was
// started, before goroutine leaks are looked for.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Main(m))
}

// waitFor bounds every wait in these tests.
const waitFor = 5 * time.Second

// logBuffer collects the relay's logs and prints them only when a test
// fails, so passing runs stay quiet.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	lb := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			lb.mu.Lock()
			t.Logf("relay log:\n%s", lb.buf.String())
			lb.mu.Unlock()
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startRelay starts a relay on loopback in dir (a fresh temp dir when
// empty) and closes it when the test ends.
func startRelay(t *testing.T, dir string, opts Options) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	opts.DataDir = dir
	if opts.Store == "" {
		opts.Store = testStoreFor(t, dir)
	}
	opts.GRPCAddr = "127.0.0.1:0"
	opts.HTTPAddr = "127.0.0.1:0"
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		srv.Close()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

// dial opens a TLS client connection that trusts only the relay's dev CA.
func dial(t *testing.T, srv *Server) *grpc.ClientConn {
	t.Helper()
	return dialAddr(t, srv, srv.GRPCAddr())
}

// dialAddr is dial to another of the relay's TLS addresses (the platform
// API's own, with Options.APIAddr), with opts besides the relay's TLS.
func dialAddr(t *testing.T, srv *Server, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	pool, err := capool.Load(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
	}))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func projectToken(t *testing.T, srv *Server) string {
	t.Helper()
	tok, err := srv.CreateProjectToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testAgent is a raw protocol client standing in for line-agent.
type testAgent struct {
	t      *testing.T
	cc     *grpc.ClientConn
	client linev1.LineRelayClient
	id     string
	secret string
	token  string
	lines  []string
	// autoHealth, when not zero, is the HealthStatus every HealthCheck is
	// answered with.
	autoHealth atomic.Int32
	cur        *testStream
}

// testStream is one Connect stream of a testAgent, its frames sorted by kind.
type testStream struct {
	stream   linev1.LineRelay_ConnectClient
	cancel   context.CancelFunc
	sendMu   sync.Mutex
	welcome  chan *linev1.RelayFrame
	commands chan *linev1.RelayFrame
	acks     chan *linev1.RelayFrame
	checks   chan *linev1.RelayFrame
	drains   chan *linev1.RelayFrame
	beats    chan struct{}
	done     chan struct{}
	err      error // set before done is closed
}

// enrollAgent enrolls a new agent serving lines with a fresh project token.
func enrollAgent(t *testing.T, srv *Server, lines ...string) *testAgent {
	t.Helper()
	return enrollWith(t, srv, projectToken(t, srv), lines...)
}

// enrollWith enrolls a new agent serving lines with the project token tok.
func enrollWith(t *testing.T, srv *Server, tok string, lines ...string) *testAgent {
	t.Helper()
	cc := dial(t, srv)
	a := &testAgent{t: t, cc: cc, client: linev1.NewLineRelayClient(cc), lines: lines}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	resp, err := a.client.Enroll(ctx, &linev1.EnrollRequest{ProjectToken: tok, Hostname: "mini-test", Version: "test", Lines: lines})
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	a.id, a.secret, a.token = resp.GetAgentId(), resp.GetAgentSecret(), resp.GetCredential().GetAccessToken()
	return a
}

// redial points the agent at a (restarted) relay with the same identity.
func (a *testAgent) redial(srv *Server) {
	a.cc = dial(a.t, srv)
	a.client = linev1.NewLineRelayClient(a.cc)
}

// open starts a Connect stream with token (none when empty) and makes it
// the agent's current stream.
func (a *testAgent) open(tok string) *testStream {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	st, err := a.client.Connect(ctx)
	if err != nil {
		cancel()
		a.t.Fatalf("Connect: %v", err)
	}
	ts := &testStream{
		stream: st, cancel: cancel,
		welcome: make(chan *linev1.RelayFrame, 4), commands: make(chan *linev1.RelayFrame, 1024),
		acks: make(chan *linev1.RelayFrame, 1024), checks: make(chan *linev1.RelayFrame, 1024),
		drains: make(chan *linev1.RelayFrame, 4), beats: make(chan struct{}, 1024), done: make(chan struct{}),
	}
	go a.receive(ts)
	a.t.Cleanup(ts.close)
	a.cur = ts
	return ts
}

func (a *testAgent) receive(ts *testStream) {
	defer close(ts.done)
	for {
		f, err := ts.stream.Recv()
		if err != nil {
			ts.err = err
			return
		}
		var ch chan *linev1.RelayFrame
		switch f.GetFrame().(type) {
		case *linev1.RelayFrame_Welcome:
			ch = ts.welcome
		case *linev1.RelayFrame_Command:
			ch = ts.commands
		case *linev1.RelayFrame_EventAck:
			ch = ts.acks
		case *linev1.RelayFrame_HealthCheck:
			if hs := linev1.HealthStatus(a.autoHealth.Load()); hs != linev1.HealthStatus_HEALTH_STATUS_UNSPECIFIED {
				_ = ts.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: &linev1.HealthReport{
					CheckId: f.GetHealthCheck().GetId(), Status: hs,
					Components: []*linev1.HealthComponent{{Name: "chatdb", Status: hs, Detail: "reading"}},
				}}})
			}
			ch = ts.checks
		case *linev1.RelayFrame_Drain:
			ch = ts.drains
		case *linev1.RelayFrame_Heartbeat:
			select {
			case ts.beats <- struct{}{}:
			default:
			}
			continue
		}
		select {
		case ch <- f:
		default:
		}
	}
}

// close ends the stream and waits for its receiver.
func (ts *testStream) close() {
	ts.cancel()
	<-ts.done
}

func (ts *testStream) send(f *linev1.AgentFrame) error {
	ts.sendMu.Lock()
	defer ts.sendMu.Unlock()
	return ts.stream.Send(f)
}

// close ends the agent's current stream.
func (a *testAgent) close() { a.cur.close() }

func (a *testAgent) send(f *linev1.AgentFrame) {
	a.t.Helper()
	if err := a.cur.send(f); err != nil {
		a.t.Fatalf("send %T: %v", f.GetFrame(), err)
	}
}

func (a *testAgent) hello() *linev1.AgentFrame {
	return &linev1.AgentFrame{Frame: &linev1.AgentFrame_Hello{Hello: &linev1.Hello{
		AgentId: a.id, Version: "test", Lines: a.lines, Hostname: "mini-test", Driver: "sim", OsVersion: "15.0",
		Capabilities: []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_TYPING},
	}}}
}

// connect opens a stream, says Hello and returns the Welcome.
func (a *testAgent) connect() *linev1.Welcome {
	a.t.Helper()
	a.open(a.token)
	a.send(a.hello())
	return a.expect(a.cur.welcome, "Welcome").GetWelcome()
}

func (a *testAgent) expect(ch chan *linev1.RelayFrame, what string) *linev1.RelayFrame {
	a.t.Helper()
	select {
	case f := <-ch:
		return f
	case <-a.cur.done:
		a.t.Fatalf("stream ended while waiting for %s: %v", what, a.cur.err)
	case <-time.After(waitFor):
		a.t.Fatalf("no %s within %s", what, waitFor)
	}
	return nil
}

func (a *testAgent) nextCommand() *linev1.Command {
	a.t.Helper()
	return a.expect(a.cur.commands, "Command").GetCommand()
}

// noCommand asserts nothing is dispatched for a short while.
func (a *testAgent) noCommand(d time.Duration) {
	a.t.Helper()
	select {
	case f := <-a.cur.commands:
		a.t.Fatalf("unexpected command %q", f.GetCommand().GetId())
	case <-time.After(d):
	}
}

func (a *testAgent) nextAck() uint64 {
	a.t.Helper()
	return a.expect(a.cur.acks, "EventAck").GetEventAck().GetSequence()
}

// ended waits for the relay to end the current stream and returns its error.
func (a *testAgent) ended() error {
	a.t.Helper()
	return a.cur.ended(a.t)
}

func (ts *testStream) ended(t *testing.T) error {
	t.Helper()
	select {
	case <-ts.done:
		return ts.err
	case <-time.After(waitFor):
		t.Fatalf("stream still open after %s", waitFor)
	}
	return nil
}

func (a *testAgent) update(id string, st linev1.CommandState, p *linev1.Progress) {
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Update{Update: &linev1.CommandUpdate{CommandId: id, State: st, Progress: p, Detail: "working"}}})
}

func (a *testAgent) succeed(id, guid string) {
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{
		CommandId: id, Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: guid, ChatGuid: "iMessage;-;+15550100", Sent: true}},
		FinishedAt: timestamppb.Now(),
	}}})
}

func (a *testAgent) event(seq uint64, key, text string) {
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: &linev1.Event{
		Sequence: seq, Key: key, ChatGuid: "iMessage;-;+15550100", MessageGuid: strings.Split(key, "/")[0],
		Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{Text: text, Sender: "+15550100"}},
	}}})
}

// ---- HTTP helpers ----

func httpDo(t *testing.T, srv *Server, method, path, body string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+srv.HTTPAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q", method, path, ct)
	}
	return resp.StatusCode, b
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func postCommand(t *testing.T, srv *Server, body string) (int, map[string]any) {
	t.Helper()
	code, b := httpDo(t, srv, http.MethodPost, "/v1/commands", body)
	return code, decode[map[string]any](t, b)
}

func getCommand(t *testing.T, srv *Server, id string) CommandView {
	t.Helper()
	code, b := httpDo(t, srv, http.MethodGet, "/v1/commands/"+id, "")
	if code != http.StatusOK {
		t.Fatalf("GET command %s: %d %s", id, code, b)
	}
	return decode[CommandView](t, b)
}

// eventually polls cond every 10 ms until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitState(t *testing.T, srv *Server, id, state string) CommandView {
	t.Helper()
	var v CommandView
	eventually(t, id+" to be "+state, func() bool {
		v = getCommand(t, srv, id)
		return v.State == state
	})
	return v
}

func agentView(t *testing.T, srv *Server, id string) AgentView {
	t.Helper()
	code, b := httpDo(t, srv, http.MethodGet, "/v1/agents", "")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/agents: %d", code)
	}
	for _, v := range decode[struct{ Agents []AgentView }](t, b).Agents {
		if v.ID == id {
			return v
		}
	}
	t.Fatalf("agent %s not listed: %s", id, b)
	return AgentView{}
}

// busyAgent enrolls and connects an agent serving +15550001 (answering
// health checks OK) with what a relay must keep across a restart or a
// move: command "done" succeeded, "running" in progress, and three events
// (k1 to k3) stored and acknowledged.
func busyAgent(t *testing.T, srv *Server) *testAgent {
	t.Helper()
	a := enrollAgent(t, srv, "+15550001")
	a.autoHealth.Store(int32(linev1.HealthStatus_HEALTH_STATUS_OK))
	a.connect()
	postCommand(t, srv, sendText("done", "+15550001"))
	postCommand(t, srv, sendText("running", "+15550001"))
	a.nextCommand()
	a.nextCommand()
	a.succeed("done", "g-done")
	a.update("running", linev1.CommandState_COMMAND_STATE_IN_PROGRESS, nil)
	for i := uint64(1); i <= 3; i++ {
		a.event(i, fmt.Sprintf("k%d", i), "before")
	}
	for a.nextAck() != 3 {
	}
	waitState(t, srv, "done", "succeeded")
	waitState(t, srv, "running", "in_progress")
	return a
}

func sendText(id, line string) string {
	return `{"id":"` + id + `","line":"` + line + `","chat_guid":"iMessage;-;+15550100","send_text":{"text":"hello"}}`
}
