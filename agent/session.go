package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Session holds the one stream to the relay. Run dials, says Hello with the
// resume point, waits for Welcome, then runs the stream's four loops until
// the first of them ends, and reconnects with full-jitter backoff:
//
//   - the reader (session_reader.go): frames in; it never waits on Messages;
//   - the writer (session_writer.go): the only caller of Send; heartbeats;
//     Goodbye;
//   - the watchdog (session_watchdog.go): no frame for twice the heartbeat
//     interval tears the stream down;
//   - the event pump (session_pump.go): outbox to stream, within the relay's
//     window; acks move the window on.
//
// Every wait (backoff, Welcome, heartbeat, watchdog, Goodbye) is on the time
// package's clock; the tests run the session inside a testing/synctest
// bubble, where that clock is fake and advances only when everything waits.
type Session struct {
	o       SessionOptions
	client  linev1.LineRelayClient
	backoff Backoff // only Run uses it

	// cur is the live stream, nil between streams.
	cur atomic.Pointer[link]

	mu sync.Mutex
	// connected flips with cur, for health; since is when it last changed;
	// lastErr is why the last stream ended. Guarded by mu.
	connected bool
	since     time.Time
	lastErr   string
	// refused are the lines the relay would not route here, from the last
	// Welcome (another agent holds them, or the token does not allow
	// them); guarded by mu.
	refused []*linev1.RefusedLine

	// goodbye asks the current stream to say Goodbye and end; closed once.
	goodbye     chan struct{}
	goodbyeOnce sync.Once
}

// SessionOptions wires a Session.
type SessionOptions struct {
	Conn *grpc.ClientConn
	// Transport, when set, made Conn's TCP connections: a stream that went
	// silent drops them, so the next one does not ride a dead connection.
	Transport *Transport
	Tokens    *tokenSource
	Journal   *Journal
	// Submit hands a command to the dispatcher; it must not block on Messages.
	Submit func(context.Context, *linev1.Command)
	// Health builds the report answering a HealthCheck.
	Health func(checkID string) *linev1.HealthReport
	// Hello fills the static part of Hello (id, version, lines, capabilities).
	Hello   func() *linev1.Hello
	Backoff Backoff
	// WelcomeTimeout bounds the wait for Welcome after Hello; zero means 15 s.
	WelcomeTimeout time.Duration
	// OnWelcome, when set, hears every Welcome as it arrives; it must not
	// block. The chat.db start-up takes the relay's acknowledged cursor
	// from it (tailstart.go).
	OnWelcome func(*linev1.Welcome)
	// CursorMarkEvery spaces the cursor marks sent to the relay on one
	// stream (the first goes at once); zero means 5 s (session_marks.go).
	CursorMarkEvery time.Duration
	Logger          *slog.Logger
	// OnStreamEnd, when set, hears why each stream ended (or failed to
	// start) when the session tries again; it must not block (metrics).
	OnStreamEnd func(err error)
}

// NewSession returns a session; Run starts it.
func NewSession(o SessionOptions) *Session {
	if o.WelcomeTimeout == 0 {
		o.WelcomeTimeout = 15 * time.Second
	}
	return &Session{o: o, client: linev1.NewLineRelayClient(o.Conn), backoff: o.Backoff, goodbye: make(chan struct{})}
}

// Emit sends a frame on the current stream, waiting while the stream is backed
// up, and drops it when there is no stream: results are in the journal and the
// relay asks again, events are in the outbox and are replayed.
func (s *Session) Emit(f *linev1.AgentFrame) {
	l := s.cur.Load()
	if l == nil {
		return
	}
	select {
	case l.out <- f:
	case <-l.done:
	}
}

// Connected reports whether a stream is up (Welcome received).
func (s *Session) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

// Component reports the session for health.
func (s *Session) Component() *linev1.HealthComponent {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := &linev1.HealthComponent{Name: "relay", Since: timestamppb.New(s.since)}
	if s.connected {
		hc.Status = linev1.HealthStatus_HEALTH_STATUS_OK
		hc.Detail = "stream up"
		if len(s.refused) > 0 {
			hc.Status = linev1.HealthStatus_HEALTH_STATUS_DEGRADED
			hc.Detail = "stream up; the relay refused " + refusedSummary(s.refused)
		}
	} else {
		hc.Status = linev1.HealthStatus_HEALTH_STATUS_DOWN
		hc.Detail = "not connected: " + s.lastErr
		// The relay refusing the agent secret itself: past the grace, the
		// plain word and what to do replace the last error.
		if why, declared := s.o.Tokens.refusal(); declared {
			hc.Detail = why
		} else if why != "" {
			hc.Detail += "; " + why
		}
	}
	return hc
}

func (s *Session) setConnected(up bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if up != s.connected {
		s.since = time.Now()
	}
	s.connected = up
	if err != nil {
		s.lastErr = err.Error()
	}
}

// refusedSummary names refused lines and why, for health.
func refusedSummary(rs []*linev1.RefusedLine) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.GetLine())
		b.WriteString(" (")
		b.WriteString(r.GetReason())
		b.WriteString(")")
	}
	return b.String()
}

// Goodbye ends the session: the current stream (if any) says Goodbye and
// closes, and Run returns.
func (s *Session) Goodbye() {
	s.goodbyeOnce.Do(func() { close(s.goodbye) })
}

// Run connects and reconnects until ctx is done or Goodbye is called.
func (s *Session) Run(ctx context.Context) error {
	refresh := false
	for {
		welcomed, err := s.connectOnce(ctx, refresh)
		s.setConnected(false, err)
		if s.over(ctx) {
			return nil
		}
		if s.o.OnStreamEnd != nil {
			s.o.OnStreamEnd(err)
		}
		if welcomed {
			s.backoff.Reset()
		}
		if (errors.Is(err, errWatchdog) || errors.Is(err, errNoWelcome)) && s.o.Transport != nil {
			// The relay went silent: the TCP connection may be half-open,
			// and gRPC would put the next stream on it.
			if n := s.o.Transport.Drop(); n > 0 {
				s.o.Logger.Warn("dropped the connection to the relay: it went silent", "connections", n)
			}
		}
		// An Unauthenticated answer renews the token before the next try.
		refresh = status.Code(err) == codes.Unauthenticated
		wait := s.backoff.Next()
		if errors.Is(err, errCapabilities) {
			wait = 0 // nothing is wrong with the relay: come straight back
		}
		s.o.Logger.Warn("relay stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.goodbye:
			t.Stop()
			return nil
		}
	}
}

// over reports whether Run should stop: the agent is stopping or said Goodbye.
func (s *Session) over(ctx context.Context) bool {
	select {
	case <-s.goodbye:
		return true
	default:
		return ctx.Err() != nil
	}
}

// connectOnce runs one stream: dial, Hello, Welcome, the four loops until the
// first of them ends, teardown. welcomed reports whether the relay got as far
// as Welcome: only then may the backoff start over. refresh renews the
// access token before dialing.
func (s *Session) connectOnce(ctx context.Context, refresh bool) (welcomed bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := s.dial(ctx, refresh)
	if err != nil {
		return false, err
	}
	hello, acked, err := s.sayHello(ctx, stream)
	if err != nil {
		return false, err
	}
	w, err := s.awaitWelcome(stream, cancel)
	if err != nil {
		return false, err
	}
	l, err := s.takeWelcome(ctx, stream, hello, w, acked)
	if err != nil {
		return true, err
	}
	defer s.hangUp(l)

	// Each loop returns why it ended and cancels ctx with that reason; the
	// others watch ctx, so the first to end ends them all.
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context) error{l.read, l.write, l.watch, l.pump} {
		wg.Go(func() { cancel(loop(ctx)) })
	}
	wg.Wait()
	return true, l.outcome(context.Cause(ctx))
}

// dial opens a stream carrying the access token, renewed first when refresh
// is set.
func (s *Session) dial(ctx context.Context, refresh bool) (linev1.LineRelay_ConnectClient, error) {
	tok, err := s.o.Tokens.token(ctx, refresh)
	if err != nil {
		return nil, err
	}
	// The session's backoff decides when to try; gRPC's own reconnect backoff
	// (up to 120 s) must not add to it after a long outage.
	s.o.Conn.ResetConnectBackoff()
	stream, err := s.client.Connect(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok))
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return stream, nil
}

// sayHello sends Hello with the resume point (the highest sequence the relay
// acknowledged) and the journal it belongs to: a new epoch tells the relay
// that sequences start from 1 again.
func (s *Session) sayHello(ctx context.Context, stream linev1.LineRelay_ConnectClient) (hello *linev1.Hello, acked uint64, err error) {
	acked, err = s.o.Journal.Acked(ctx)
	if err != nil {
		return nil, 0, err
	}
	hello = s.o.Hello()
	hello.AckedEventSequence = acked
	hello.JournalEpoch = s.o.Journal.Epoch()
	if hello.WantsChatdbCursor, err = s.o.Journal.awaitsRelayCursor(ctx); err != nil {
		return nil, 0, err
	}
	if err := stream.Send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Hello{Hello: hello}}); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream failed at the relay's end; Recv tells why (an
			// Unauthenticated token, say).
			if _, rerr := stream.Recv(); rerr != nil {
				err = rerr
			}
		}
		return nil, 0, streamErr(err)
	}
	return hello, acked, nil
}

// errNoWelcome ends a stream whose relay did not answer Hello in time.
var errNoWelcome = errors.New("relay sent no Welcome in time")

// awaitWelcome reads the relay's first frame, which must be Welcome, within
// WelcomeTimeout; past it, cancel ends the stream.
func (s *Session) awaitWelcome(stream linev1.LineRelay_ConnectClient, cancel context.CancelCauseFunc) (*linev1.Welcome, error) {
	late := time.AfterFunc(s.o.WelcomeTimeout, func() { cancel(errNoWelcome) })
	f, err := stream.Recv()
	if !late.Stop() {
		return nil, errNoWelcome
	}
	if err != nil {
		return nil, streamErr(err)
	}
	w := f.GetWelcome()
	if w == nil {
		return nil, errors.New("relay's first frame was not Welcome")
	}
	return w, nil
}

// takeWelcome takes Welcome in (heartbeat interval, event window, the resume
// point, refused lines) and makes the stream the current one.
func (s *Session) takeWelcome(ctx context.Context, stream linev1.LineRelay_ConnectClient, hello *linev1.Hello, w *linev1.Welcome, acked uint64) (*link, error) {
	interval := w.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = 15 * time.Second
	}
	window := uint64(w.GetLimits().GetMaxUnackedEvents())
	if window == 0 {
		window = 1024
	}
	// Resume: the relay may have stored more than it acked to us.
	if st := w.GetStoredEventSequence(); st > acked {
		if err := s.o.Journal.Ack(ctx, st); err != nil {
			return nil, err
		}
		acked = st
	}
	for _, r := range w.GetRefusedLines() {
		s.o.Logger.Error("the relay refused a line this agent is configured to serve; it will not get that line's commands",
			"line", r.GetLine(), "reason", r.GetReason())
	}
	s.mu.Lock()
	s.refused = w.GetRefusedLines()
	s.mu.Unlock()
	if s.o.OnWelcome != nil {
		s.o.OnWelcome(w)
	}

	l := newLink(s, stream, hello, interval, window, acked)
	s.cur.Store(l)
	s.o.Tokens.accepted() // the relay took the token: no refusal stands
	s.setConnected(true, nil)
	s.o.Logger.Info("connected to relay", "agent", w.GetAgentId(), "heartbeat", interval, "resume_after", acked)
	return l, nil
}

// hangUp retires a stream whose loops have ended: Emit stops waiting on it.
func (s *Session) hangUp(l *link) {
	s.cur.Store(nil)
	close(l.done)
}

// link is one stream from Welcome to teardown: what its four loops share.
type link struct {
	s      *Session
	stream linev1.LineRelay_ConnectClient
	// hello is what this stream announced; the writer compares the
	// capabilities that work now with it.
	hello *linev1.Hello
	// interval is the heartbeat interval Welcome set; window is how many
	// events may be sent ahead of the relay's acks; acked is the resume
	// point the pump starts after.
	interval time.Duration
	window   uint64
	acked    uint64

	// out carries frames to the writer: health answers from the reader,
	// events from the pump, updates and results through Emit.
	out chan *linev1.AgentFrame
	// done is closed once the loops have ended, so Emit stops waiting.
	done chan struct{}
	// heard holds a token when the reader got a frame the watchdog has not
	// yet counted (capacity 1: the reader never waits on it).
	heard chan struct{}
	// acks hands the relay's latest EventAck from the reader to the pump
	// (capacity 1, the newest replaces an unread one).
	acks chan uint64
	// drain is closed when the relay asks this stream to end.
	drain     chan struct{}
	drainOnce sync.Once
	// saidGoodbye is the reason the writer ended the stream with, set just
	// before it sends Goodbye.
	saidGoodbye atomic.Pointer[error]
}

func newLink(s *Session, stream linev1.LineRelay_ConnectClient, hello *linev1.Hello, interval time.Duration, window, acked uint64) *link {
	return &link{
		s: s, stream: stream, hello: hello, interval: interval, window: window, acked: acked,
		out: make(chan *linev1.AgentFrame, 256), done: make(chan struct{}), heard: make(chan struct{}, 1),
		acks: make(chan uint64, 1), drain: make(chan struct{}),
	}
}

// outcome is why the stream ended. Once this side said Goodbye, what the
// relay did next (closing its side, most likely) is its answer, not the
// reason; a Goodbye for shutting down is no failure at all.
func (l *link) outcome(cause error) error {
	if why := l.saidGoodbye.Load(); why != nil {
		if errors.Is(*why, errGoodbye) {
			return nil
		}
		return *why
	}
	return cause
}

var (
	// errWatchdog is the cause when the relay went silent.
	errWatchdog = errors.New("no frame from the relay for twice the heartbeat interval")
	// errRelayClosed is the relay ending the stream from its side.
	errRelayClosed = errors.New("relay closed the stream")
	errGoodbye     = errors.New("goodbye sent")
	errDrained     = errors.New("stream drained at the relay's request")
	// errCapabilities ends a stream whose Hello no longer says what works.
	errCapabilities = errors.New("capabilities changed")
)

// streamErr names a failed Send or Recv: io.EOF is the relay closing the
// stream; anything else is the gRPC status, which Run inspects (an
// Unauthenticated one renews the token before the next try).
func streamErr(err error) error {
	if errors.Is(err, io.EOF) {
		return errRelayClosed
	}
	return err
}
