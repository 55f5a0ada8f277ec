package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// fakeRelay is the relay's end of the stream, scripted per stream and served
// over an in-memory bufconn listener. It is made for a testing/synctest
// bubble: gRPC over bufconn blocks only in ways the bubble understands, so
// advance moves the session's clock (backoff, Welcome deadline, heartbeats,
// watchdog, Goodbye wait) and nothing waits for real time. Real line-relay over loopback cannot run in a bubble (its sockets
// and HTTP server are outside it); the end-to-end tests use it with real
// time instead.
type fakeRelay struct {
	linev1.UnimplementedLineRelayServer

	mu sync.Mutex
	// script plays the relay's part of a stream after its Hello; nil
	// welcomes with a 15 s heartbeat and reads until the stream ends.
	// Guarded by mu.
	script func(st *relayStream) error
	// lis and srv serve while the relay is up; nil while it is down (dials
	// fail). Guarded by mu.
	lis *bufconn.Listener
	srv *grpc.Server
	// token, when set, is the only access token Connect accepts; rejected
	// counts the streams it refused. Refresh hands out tok1, tok2...
	// Guarded by mu.
	token     string
	rejected  int
	refreshes int
	// streams are the streams that got as far as Hello; guarded by mu.
	streams []*relayStream
}

// newFakeRelay starts a relay that serves until the test ends.
func newFakeRelay(t *testing.T, script func(st *relayStream) error) *fakeRelay {
	r := &fakeRelay{script: script}
	r.up()
	t.Cleanup(r.down)
	return r
}

// up starts serving (again: a restarted relay).
func (r *fakeRelay) up() {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	linev1.RegisterLineRelayServer(srv, r)
	go srv.Serve(lis)
	r.mu.Lock()
	r.lis, r.srv = lis, srv
	r.mu.Unlock()
}

// down stops the relay: its connections break and dials fail until up.
func (r *fakeRelay) down() {
	r.mu.Lock()
	srv := r.srv
	r.lis, r.srv = nil, nil
	r.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

var errRelayDown = errors.New("connection refused (the fake relay is down)")

func (r *fakeRelay) dial(ctx context.Context, _ string) (net.Conn, error) {
	r.mu.Lock()
	lis := r.lis
	r.mu.Unlock()
	if lis == nil {
		return nil, errRelayDown
	}
	return lis.DialContext(ctx)
}

// client is a gRPC connection to the relay, closed when the test ends.
func (r *fakeRelay) client(t *testing.T) *grpc.ClientConn {
	cc, err := grpc.NewClient("passthrough:///fake-relay", grpc.WithContextDialer(r.dial), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (r *fakeRelay) Connect(srv linev1.LineRelay_ConnectServer) error {
	md, _ := metadata.FromIncomingContext(srv.Context())
	auth := strings.Join(md.Get("authorization"), ",")
	r.mu.Lock()
	if r.token != "" && auth != "Bearer "+r.token {
		r.rejected++
		r.mu.Unlock()
		return status.Error(codes.Unauthenticated, "access token not valid")
	}
	r.mu.Unlock()
	f, err := srv.Recv()
	if err != nil {
		return err
	}
	st := &relayStream{srv: srv, hello: f.GetHello(), auth: auth, opened: time.Now()}
	r.mu.Lock()
	st.n = len(r.streams) + 1
	r.streams = append(r.streams, st)
	script := r.script
	r.mu.Unlock()
	defer st.end()
	if script == nil {
		script = welcomeAndRead(&linev1.Welcome{HeartbeatInterval: durationpb.New(15 * time.Second)})
	}
	return script(st)
}

func (r *fakeRelay) Refresh(context.Context, *linev1.RefreshRequest) (*linev1.RefreshResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshes++
	return &linev1.RefreshResponse{Credential: &linev1.Credential{
		AccessToken: fmt.Sprintf("tok%d", r.refreshes), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
	}}, nil
}

// stream returns the nth stream (from 1), nil if there was none yet.
func (r *fakeRelay) stream(n int) *relayStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n > len(r.streams) {
		return nil
	}
	return r.streams[n-1]
}

// count is how many streams reached Hello.
func (r *fakeRelay) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.streams)
}

// relayStream is one stream as the fake relay saw it.
type relayStream struct {
	n      int // 1 for the first stream
	hello  *linev1.Hello
	auth   string    // the authorization header
	opened time.Time // when Hello arrived
	srv    linev1.LineRelay_ConnectServer

	mu sync.Mutex
	// frames are what the agent sent after Hello; guarded by mu.
	frames []*linev1.AgentFrame
	// closed is when the stream ended at the relay, zero while it is open;
	// guarded by mu.
	closed time.Time
}

func (st *relayStream) welcome(w *linev1.Welcome) error {
	return st.srv.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Welcome{Welcome: w}})
}

// read records what the agent sends until the stream ends; the agent's
// half-close (after its Goodbye) ends it cleanly.
func (st *relayStream) read() error {
	for {
		f, err := st.srv.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		st.mu.Lock()
		st.frames = append(st.frames, f)
		st.mu.Unlock()
	}
}

func (st *relayStream) end() {
	st.mu.Lock()
	st.closed = time.Now()
	st.mu.Unlock()
}

// open reports whether the stream is still up at the relay.
func (st *relayStream) open() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closed.IsZero()
}

// lasted is how long the stream was up at the relay.
func (st *relayStream) lasted() time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.closed.Sub(st.opened)
}

// sent returns the frames of one kind the agent sent, in order, such as
// (*linev1.AgentFrame).GetHeartbeat.
func sent[T comparable](st *relayStream, get func(*linev1.AgentFrame) T) []T {
	st.mu.Lock()
	defer st.mu.Unlock()
	var zero T
	var out []T
	for _, f := range st.frames {
		if v := get(f); v != zero {
			out = append(out, v)
		}
	}
	return out
}

// welcomeAndRead is the plain relay script: Welcome, then read to the end.
func welcomeAndRead(w *linev1.Welcome) func(st *relayStream) error {
	return func(st *relayStream) error {
		if err := st.welcome(w); err != nil {
			return err
		}
		return st.read()
	}
}

// testSession is a Session running against a fakeRelay in the test's bubble.
type testSession struct {
	*Session
	journal *Journal
	// stopped is closed when Run has returned, with err.
	stopped chan struct{}
	err     error
}

// running reports whether Run has not returned yet.
func (ts *testSession) running() bool {
	select {
	case <-ts.stopped:
		return false
	default:
		return true
	}
}

// startSession runs a Session against r until the test ends. Its defaults:
// a token valid for an hour, backoff 1 s base, 3 s cap, and a jitter of one
// half (so waits are 0.5 s, 1 s, 1.5 s, 1.5 s...); tweak changes them.
func startSession(t *testing.T, r *fakeRelay, tweak func(*SessionOptions)) *testSession {
	t.Helper()
	cc := r.client(t)
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	now := time.Now()
	o := SessionOptions{
		Conn: cc,
		Tokens: &tokenSource{dir: t.TempDir(), client: linev1.NewLineRelayClient(cc), creds: &Credentials{
			AgentID: "agt", AgentSecret: "s", AccessToken: "tok0", IssuedAt: now, ExpiresAt: now.Add(time.Hour)}},
		Journal: j,
		Submit:  func(context.Context, *linev1.Command) {},
		Health:  func(id string) *linev1.HealthReport { return &linev1.HealthReport{CheckId: id} },
		Hello: func() *linev1.Hello {
			return &linev1.Hello{AgentId: "agt", Capabilities: []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}}
		},
		Backoff: Backoff{Base: time.Second, Cap: 3 * time.Second, Rand: func() float64 { return 0.5 }},
		Logger:  testLogger(t),
	}
	if tweak != nil {
		tweak(&o)
	}
	ts := &testSession{Session: NewSession(o), journal: j, stopped: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		defer close(ts.stopped)
		ts.err = ts.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-ts.stopped
	})
	synctest.Wait() // dialed, said Hello, and whatever the relay answers at once
	return ts
}

// advance moves the bubble's clock on by d, then lets every goroutine run
// until it waits again. Only for a synctest bubble, where sleeping takes no
// real time: it returns as soon as everything else is blocked.
func advance(d time.Duration) {
	time.Sleep(d) // the bubble's fake clock
	synctest.Wait()
}
