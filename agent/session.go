package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
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

// Session holds the one stream to the relay: it dials, says Hello with the
// resume point, waits for Welcome, then runs the reader, the writer with its
// heartbeat, the watchdog and the event pump until the stream fails, and
// reconnects with full-jitter backoff. Only the writer goroutine calls Send.
type Session struct {
	o       SessionOptions
	client  linev1.LineRelayClient
	backoff Backoff

	// cur is the live connection, nil between streams.
	cur atomic.Pointer[conn]
	// connected flips with cur, for health; since is when it last changed.
	mu        sync.Mutex
	connected bool      // guarded by mu
	since     time.Time // guarded by mu
	lastErr   string    // guarded by mu
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
	Conn    *grpc.ClientConn
	Tokens  *tokenSource
	Journal *Journal
	// Submit hands a command to the dispatcher; it must not block on Messages.
	Submit func(context.Context, *linev1.Command)
	// Health builds the report answering a HealthCheck.
	Health func(checkID string) *linev1.HealthReport
	// Hello fills the static part of Hello (id, version, lines, capabilities).
	Hello   func() *linev1.Hello
	Backoff Backoff
	// WelcomeTimeout bounds the wait for Welcome after Hello.
	WelcomeTimeout time.Duration
	Logger         *slog.Logger
}

// conn is one stream's outbound side.
type conn struct {
	out  chan *linev1.AgentFrame
	done chan struct{}
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
	c := s.cur.Load()
	if c == nil {
		return
	}
	select {
	case c.out <- f:
	case <-c.done:
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
	log := s.o.Logger
	for {
		welcomed, err := s.connectOnce(ctx)
		s.setConnected(false, err)
		select {
		case <-s.goodbye:
			return nil
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		if welcomed {
			s.backoff.Reset()
		}
		wait := s.backoff.Next()
		if errors.Is(err, errCapabilities) {
			wait = 0 // nothing is wrong with the relay: come straight back
		}
		log.Warn("relay stream ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
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

// errWatchdog is the cause when the relay went silent.
var errWatchdog = errors.New("no frame from the relay for twice the heartbeat interval")

func (s *Session) connectOnce(ctx context.Context) (welcomed bool, err error) {
	tok, err := s.o.Tokens.token(ctx, false)
	if err != nil {
		return false, err
	}
	// The session's backoff decides when to try; gRPC's own reconnect backoff
	// (up to 120 s) must not add to it after a long outage.
	s.o.Conn.ResetConnectBackoff()
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := s.client.Connect(metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+tok))
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	acked, err := s.o.Journal.Acked(ctx)
	if err != nil {
		return false, err
	}
	hello := s.o.Hello()
	// The resume point and the journal it belongs to: a new epoch tells the
	// relay that sequences start from 1 again.
	hello.AckedEventSequence = acked
	hello.JournalEpoch = s.o.Journal.Epoch()
	if err := stream.Send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Hello{Hello: hello}}); err != nil {
		return false, s.streamErr(ctx, err)
	}

	// Wait for Welcome, bounded.
	type recvd struct {
		f   *linev1.RelayFrame
		err error
	}
	first := make(chan recvd, 1)
	go func() { f, err := stream.Recv(); first <- recvd{f, err} }()
	timer := time.NewTimer(s.o.WelcomeTimeout)
	var r recvd
	select {
	case r = <-first:
		timer.Stop()
	case <-timer.C:
		cancel(errors.New("no Welcome in time"))
		<-first
		return false, errors.New("relay sent no Welcome in time")
	}
	if r.err != nil {
		return false, s.streamErr(ctx, r.err)
	}
	w := r.f.GetWelcome()
	if w == nil {
		return false, errors.New("relay's first frame was not Welcome")
	}
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
			return true, err
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

	c := &conn{out: make(chan *linev1.AgentFrame, 256), done: make(chan struct{})}
	s.cur.Store(c)
	s.setConnected(true, nil)
	s.o.Logger.Info("connected to relay", "agent", w.GetAgentId(), "heartbeat", interval, "resume_after", acked)
	defer func() {
		s.cur.Store(nil)
		close(c.done)
	}()

	var lastRecv atomic.Int64
	lastRecv.Store(time.Now().UnixNano())
	ackedC := make(chan uint64, 1)
	drain := make(chan struct{})
	var ending atomic.Pointer[error]
	var drainOnce sync.Once
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- err
				cancel(err)
			}
		}()
	}

	// Reader: never waits on Messages (Submit only queues).
	run(func() error {
		for {
			f, err := stream.Recv()
			if err != nil {
				return s.streamErr(ctx, err)
			}
			lastRecv.Store(time.Now().UnixNano())
			switch fr := f.GetFrame().(type) {
			case *linev1.RelayFrame_Command:
				s.o.Submit(sctx, fr.Command)
			case *linev1.RelayFrame_EventAck:
				if err := s.o.Journal.Ack(sctx, fr.EventAck.GetSequence()); err != nil {
					return err
				}
				select {
				case ackedC <- fr.EventAck.GetSequence():
				default:
					select {
					case <-ackedC:
					default:
					}
					ackedC <- fr.EventAck.GetSequence()
				}
			case *linev1.RelayFrame_HealthCheck:
				rep := s.o.Health(fr.HealthCheck.GetId())
				select {
				case c.out <- &linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: rep}}:
				case <-sctx.Done():
					return nil
				}
			case *linev1.RelayFrame_Drain:
				// The relay is going away (or rebalancing): end this stream
				// politely and come back on a new one. Results of commands
				// still running are in the journal for the redelivery.
				s.o.Logger.Info("relay asked to drain this stream", "reason", fr.Drain.GetReason())
				drainOnce.Do(func() { close(drain) })
			}
		}
	})

	// Writer: the only goroutine that sends; also the heartbeat.
	run(func() error {
		hb := time.NewTicker(interval)
		defer hb.Stop()
		for {
			var f *linev1.AgentFrame
			var endErr error
			select {
			case f = <-c.out:
			case <-hb.C:
				if !slices.Equal(s.o.Hello().GetCapabilities(), hello.GetCapabilities()) {
					// Hello must say exactly what works (the helper came or
					// went): say Goodbye and come back with a fresh Hello.
					s.o.Logger.Info("capabilities changed; reconnecting to announce them")
					endErr = errCapabilities
					break
				}
				f = &linev1.AgentFrame{Frame: &linev1.AgentFrame_Heartbeat{Heartbeat: &linev1.Heartbeat{SentAt: timestamppb.Now()}}}
			case <-drain:
				endErr = errDrained
			case <-s.goodbye:
				endErr = errGoodbye
			case <-sctx.Done():
				return nil
			}
			if endErr != nil {
				// Flush what is queued (results of drained commands), then say
				// Goodbye and half-close.
			flush:
				for {
					select {
					case f := <-c.out:
						if err := stream.Send(f); err != nil {
							return s.streamErr(ctx, err)
						}
					default:
						break flush
					}
				}
				reason := "agent shutting down"
				switch endErr {
				case errDrained:
					reason = "drained at the relay's request"
				case errCapabilities:
					reason = "capabilities changed"
				}
				_ = stream.Send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Goodbye{Goodbye: &linev1.Goodbye{Reason: reason}}})
				_ = stream.CloseSend()
				// Let the relay read the Goodbye and close its side; cutting
				// the stream now would make a clean stop look like a crash.
				ending.Store(&endErr)
				t := time.NewTimer(3 * time.Second)
				defer t.Stop()
				select {
				case <-sctx.Done():
				case <-t.C:
				}
				return endErr
			}
			if err := stream.Send(f); err != nil {
				return s.streamErr(ctx, err)
			}
		}
	})

	// Watchdog: a relay that answers TCP keepalives but sends nothing is dead.
	run(func() error {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if time.Since(time.Unix(0, lastRecv.Load())) > 2*interval {
					return errWatchdog
				}
			case <-sctx.Done():
				return nil
			}
		}
	})

	// Event pump: replay the outbox after the resume point, then follow it,
	// never more than the window ahead of the relay's acks.
	run(func() error {
		sent, ackedTo := acked, acked
		for {
			changed := s.o.Journal.Changed()
			for sent-ackedTo < window {
				evs, err := s.o.Journal.EventsAfter(sctx, sent, int(min(window-(sent-ackedTo), 256)))
				if err != nil {
					if sctx.Err() != nil {
						return nil
					}
					return err
				}
				if len(evs) == 0 {
					break
				}
				for _, ev := range evs {
					select {
					case c.out <- &linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: ev}}:
					case <-sctx.Done():
						return nil
					}
					sent = ev.GetSequence()
				}
			}
			select {
			case <-changed:
			case a := <-ackedC:
				ackedTo = max(ackedTo, a)
			case <-sctx.Done():
				return nil
			}
		}
	})

	wg.Wait()
	close(errs)
	err = <-errs
	if e := ending.Load(); e != nil {
		if errors.Is(*e, errGoodbye) {
			return true, nil
		}
		return true, *e
	}
	if err == nil {
		err = context.Cause(sctx)
	}
	return true, err
}

var (
	errGoodbye = errors.New("goodbye sent")
	errDrained = errors.New("stream drained at the relay's request")
	// errCapabilities ends a stream whose Hello no longer says what works.
	errCapabilities = errors.New("capabilities changed")
)

// streamErr turns a stream error into something worth logging; an
// Unauthenticated answer forces a token refresh before the next attempt.
func (s *Session) streamErr(ctx context.Context, err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("relay closed the stream")
	}
	if status.Code(err) == codes.Unauthenticated {
		if _, rerr := s.o.Tokens.token(ctx, true); rerr != nil {
			return fmt.Errorf("%w (and refresh failed: %v)", err, rerr)
		}
	}
	return err
}
