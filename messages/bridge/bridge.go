package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Bridge listens for the helper and carries requests to it. One helper
// connection is used at a time: a new one replaces the old (Messages was
// restarted and the helper reloaded), failing whatever the old one had
// pending. Safe for concurrent use.
type Bridge struct {
	opts Options
	log  *slog.Logger
	lns  []net.Listener

	ctx     context.Context // ends when the bridge closes
	cancel  context.CancelFunc
	stopped chan struct{} // closed when Close has finished
	wg      sync.WaitGroup

	events   chan Event
	dropped  atomic.Uint64
	nextTx   atomic.Uint64
	stats    stats
	refused  refusals // connections the Verifier refused
	evMu     sync.Mutex
	evClosed bool // guarded by evMu

	mu      sync.Mutex
	cur     *helperConn         // guarded by mu; nil when no helper is connected
	last    []linev1.Capability // guarded by mu; what the last handshaken helper offered
	since   time.Time           // guarded by mu; when cur last changed
	changed chan struct{}       // guarded by mu; closed and replaced on each change
}

// stats count what went wrong, for Health and support.
type stats struct {
	malformed      atomic.Uint64 // lines that were not JSON objects
	oversized      atomic.Uint64 // lines over MaxLineBytes
	unanswered     atomic.Int64  // requests in a row that timed out
	lateAnswers    atomic.Uint64 // answers for no pending request
	connectionsSeq atomic.Uint64
}

// Listen opens the loopback listener and starts accepting helpers. The
// bridge runs until ctx ends or Close is called.
func Listen(ctx context.Context, opts Options) (*Bridge, error) {
	opts = opts.withDefaults()
	if _, err := ParsePacing(string(opts.Pacing)); err != nil {
		return nil, err
	}
	lns, err := listen(ctx, opts.Addr)
	if err != nil {
		return nil, err
	}
	b := newBridge(ctx, opts, lns)
	b.log.Info("waiting for the private-API helper", "addr", b.Addr().String(), "pacing", string(opts.Pacing))
	return b, nil
}

// newBridge starts a bridge accepting on lns (none in tests that attach
// connections of their own). opts has its defaults.
func newBridge(ctx context.Context, opts Options, lns []net.Listener) *Bridge {
	b := &Bridge{
		opts:    opts,
		log:     opts.Logger.With("component", "helper"),
		lns:     lns,
		stopped: make(chan struct{}),
		events:  make(chan Event, opts.EventBuffer),
		since:   time.Now(),
		changed: make(chan struct{}),
	}
	b.ctx, b.cancel = context.WithCancel(ctx)
	for _, ln := range lns {
		b.wg.Add(1)
		go b.acceptLoop(ln)
	}
	go b.closer()
	return b
}

// listen binds addr, refusing anything but loopback: the helper protocol
// has no authentication, so it must never be reachable from the network.
// "localhost" binds both loopback families. A refused address is an
// *AddrError.
func listen(ctx context.Context, addr string) ([]net.Listener, error) {
	host, port, err := checkAddr(addr)
	if err != nil {
		return nil, err
	}
	hosts := []string{host}
	if host == "localhost" {
		hosts = []string{"127.0.0.1", "::1"}
	}
	var lc net.ListenConfig
	var lns []net.Listener
	for i, h := range hosts {
		ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(h, port))
		if err != nil {
			if i > 0 { // ::1 is a bonus; a host without IPv6 still works
				continue
			}
			return nil, fmt.Errorf("listen for the helper: %w", err)
		}
		lns = append(lns, ln)
		if port == "0" { // the second family could not share a random port
			break
		}
	}
	return lns, nil
}

// Addr is the address the helper must dial (the first listener's).
func (b *Bridge) Addr() net.Addr { return b.lns[0].Addr() }

// Close stops listening, drops the helper (failing pending requests with
// HELPER_UNAVAILABLE) and closes Events(). It waits for the bridge's
// goroutines to end.
func (b *Bridge) Close() error {
	b.cancel()
	<-b.stopped
	return nil
}

func (b *Bridge) closer() {
	<-b.ctx.Done()
	for _, ln := range b.lns {
		_ = ln.Close()
	}
	b.mu.Lock()
	hc := b.cur
	b.mu.Unlock()
	if hc != nil {
		hc.close("the agent is shutting down")
	}
	b.wg.Wait()
	b.closeEvents()
	close(b.stopped)
}

func (b *Bridge) acceptLoop(ln net.Listener) {
	defer b.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if b.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			b.log.Warn("accepting a helper connection failed", "err", err)
			select { // do not spin on a persistent error
			case <-time.After(50 * time.Millisecond):
			case <-b.ctx.Done():
				return
			}
			continue
		}
		if b.admit(nc) {
			b.attach(nc)
		}
	}
}

// attach makes nc, which admit let in, the helper connection, replacing
// any previous one.
func (b *Bridge) attach(nc net.Conn) {
	hc := newHelperConn(b, nc)
	b.mu.Lock()
	if b.ctx.Err() != nil {
		b.mu.Unlock()
		_ = nc.Close()
		return
	}
	old := b.cur
	b.cur = hc
	b.since = time.Now()
	b.notifyLocked()
	b.mu.Unlock()
	if old != nil {
		b.log.Info("a new helper connection replaces the previous one", "old", old.seq, "new", hc.seq)
		old.close("replaced by a new helper connection")
	}
	b.log.Info("helper connected", "remote", nc.RemoteAddr().String(), "conn", hc.seq)
	b.deliver(Event{Name: EventHelperChanged})
	b.wg.Add(2)
	go hc.readLoop()
	go hc.handshake()
}

// detach forgets hc if it is still the current connection.
func (b *Bridge) detach(hc *helperConn, reason string) {
	b.mu.Lock()
	current := b.cur == hc
	if current {
		b.cur = nil
		b.since = time.Now()
		b.notifyLocked()
	}
	b.mu.Unlock()
	if current {
		b.log.Warn("helper disconnected", "conn", hc.seq, "reason", reason)
		b.deliver(Event{Name: EventHelperChanged})
	}
}

// notifyLocked wakes everyone in Wait. b.mu must be held.
func (b *Bridge) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// handshakeDone announces hc's capabilities: the event is queued before
// Wait returns, so a caller of Wait finds it in Events().
func (b *Bridge) handshakeDone(hc *helperConn) {
	b.deliver(Event{Name: EventHelperChanged})
	b.mu.Lock()
	if b.cur == hc {
		b.last = capabilitiesOf(hc.actions)
		b.notifyLocked()
	}
	b.mu.Unlock()
}

// Offered is what the bridge offers with its helper connected: the current
// helper's capabilities, or, while none is connected, the last one's. A
// helper that reconnects (a crash, Messages restarting) is away for a
// moment; a command for it then is for the helper to answer, or fail as
// HELPER_UNAVAILABLE (nothing sent, retryable), not UNSUPPORTED, which
// says this Mac cannot do it at all.
func (b *Bridge) Offered() []linev1.Capability {
	if cs := b.Capabilities(); cs != nil {
		return cs
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

func (b *Bridge) current() *helperConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur
}

// Connected reports whether a helper is connected now.
func (b *Bridge) Connected() bool { return b.current() != nil }

// Capabilities is exactly what the connected helper can do: none without a
// helper or while its handshake is still running, the BlueBubbles base set
// for a helper that ignored line-agent-hello, and what a line-agent helper
// listed otherwise.
func (b *Bridge) Capabilities() []linev1.Capability {
	hc := b.current()
	if hc == nil || !hc.handshaken() {
		return nil
	}
	return capabilitiesOf(hc.actions)
}

// Wait blocks until a helper is connected and its handshake is over, so
// that Capabilities is final; it returns ctx's error otherwise.
func (b *Bridge) Wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		hc, changed := b.cur, b.changed
		b.mu.Unlock()
		if hc != nil && hc.handshaken() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.ctx.Done():
			return errBridgeClosed
		}
	}
}

var errBridgeClosed = errors.New("the helper bridge is closed")
