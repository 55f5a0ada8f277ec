package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"time"
)

// helperConn is one connected helper: its socket, pending transactions and
// what its handshake established.
type helperConn struct {
	b         *Bridge
	nc        net.Conn
	seq       uint64
	connected time.Time

	done      chan struct{} // closed when the connection is torn down
	closeOnce sync.Once

	// wsem is a one-slot write lock a caller can give up on (ctx); its
	// holder owns lastWrite and lastAnswered, what the next write is paced
	// by.
	wsem         chan struct{}
	lastWrite    time.Time
	lastAnswered <-chan struct{} // closed once the last write's request is answered; nil without a transaction

	// hsDone is closed when the handshake is over; the fields below it are
	// written before and only read after.
	hsDone     chan struct{}
	actions    map[string]bool
	features   map[string]bool
	lineAgent  bool
	helperName string

	mu      sync.Mutex
	pending map[string]*call // guarded by mu
	closed  bool             // guarded by mu
	reason  string           // guarded by mu; why it closed
	process string           // guarded by mu; from the ping
	ready   bool             // guarded by mu; "ready" event seen
}

// call is one request waiting for its answer.
type call struct {
	result   chan callResult // buffered: the reader never blocks on it
	answered chan struct{}   // closed when the answer arrives: the next write may go
	progress func(Progress)
}

type callResult struct {
	ans       *answer
	helperMsg string
}

func newHelperConn(b *Bridge, nc net.Conn) *helperConn {
	return &helperConn{
		b:         b,
		nc:        nc,
		seq:       b.stats.connectionsSeq.Add(1),
		connected: time.Now(),
		done:      make(chan struct{}),
		wsem:      make(chan struct{}, 1),
		hsDone:    make(chan struct{}),
		pending:   map[string]*call{},
	}
}

func (hc *helperConn) handshaken() bool {
	select {
	case <-hc.hsDone:
		return true
	default:
		return false
	}
}

// close tears the connection down once: pending calls see done and fail
// with HELPER_UNAVAILABLE at once.
func (hc *helperConn) close(reason string) {
	hc.closeOnce.Do(func() {
		hc.mu.Lock()
		hc.closed = true
		hc.reason = reason
		hc.mu.Unlock()
		close(hc.done)
		_ = hc.nc.Close()
		hc.b.detach(hc, reason)
	})
}

func (hc *helperConn) closeReason() string {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.reason
}

func (hc *helperConn) readLoop() {
	defer hc.b.wg.Done()
	lr := newLineReader(hc.nc, hc.b.opts.MaxLineBytes)
	for {
		line, err := lr.next()
		var tooLong *lineTooLongError
		switch {
		case errors.As(err, &tooLong):
			hc.b.stats.oversized.Add(1)
			hc.b.log.Warn("dropped an oversized line from the helper", "bytes", tooLong.size, "limit", tooLong.limit)
			continue
		case err != nil:
			hc.close("the helper closed the connection: " + err.Error())
			return
		case len(line) == 0:
			continue
		}
		hc.handleLine(line)
	}
}

func (hc *helperConn) handleLine(line []byte) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(line, &m); err != nil || m == nil {
		hc.b.stats.malformed.Add(1)
		hc.b.log.Warn("ignored a malformed line from the helper", "line", clip(line))
		return
	}
	if id := transactionID(m); id != "" {
		hc.resolve(id, m)
		return
	}
	var name string
	if json.Unmarshal(m["event"], &name) == nil && name != "" {
		hc.event(name, m)
		return
	}
	hc.b.log.Warn("ignored a helper line with neither transactionId nor event", "line", clip(line))
}

// resolve hands an answer to the call waiting for it.
func (hc *helperConn) resolve(id string, m map[string]json.RawMessage) {
	hc.b.stats.unanswered.Store(0)
	hc.mu.Lock()
	c := hc.pending[id]
	delete(hc.pending, id)
	hc.mu.Unlock()
	if c == nil {
		hc.b.stats.lateAnswers.Add(1)
		hc.b.log.Info("answer for no pending request (it timed out?)", "transactionId", id)
		return
	}
	close(c.answered) // only the resolver that took c from pending gets here
	ans, msg := parseAnswer(m)
	c.result <- callResult{ans: ans, helperMsg: msg}
}

func (hc *helperConn) event(name string, m map[string]json.RawMessage) {
	ev := Event{Name: name, Data: m["data"]}
	_ = json.Unmarshal(m["guid"], &ev.ChatGUID)
	switch name {
	case EventPing:
		var process string
		_ = json.Unmarshal(m["process"], &process)
		hc.mu.Lock()
		hc.process = process
		hc.mu.Unlock()
		hc.b.log.Info("helper says hello", "process", process)
		return
	case EventReady:
		hc.mu.Lock()
		hc.ready = true
		hc.mu.Unlock()
		return
	case EventStartedTyping, EventTyping:
		ev.Typing = true
	case EventBackgroundProgress:
		var p Progress
		if json.Unmarshal(m["data"], &p) == nil {
			ev.Progress = &p
			if hc.progress(p) {
				return
			}
		}
	}
	hc.b.deliver(ev)
}

// progress passes p to the call it names; false when none is waiting.
func (hc *helperConn) progress(p Progress) bool {
	hc.mu.Lock()
	c := hc.pending[p.TransactionRef]
	hc.mu.Unlock()
	if c == nil || c.progress == nil {
		return false
	}
	c.progress(p)
	return true
}

// register adds c under id; false when the connection is already closed.
func (hc *helperConn) register(id string, c *call) bool {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.closed {
		return false
	}
	hc.pending[id] = c
	return true
}

func (hc *helperConn) unregister(id string) {
	hc.mu.Lock()
	delete(hc.pending, id)
	hc.mu.Unlock()
}

// framed reports whether the helper splits input on newlines itself.
func (hc *helperConn) framed() bool {
	return hc.handshaken() && hc.features[FeatureLineFraming]
}

// write sends one line, paced after the previous write for helpers that
// need it (pace). answered is closed once this line's request is answered;
// nil for a line without a transaction id, which no answer follows. A
// failed or partial write breaks the stream, so it closes the connection.
func (hc *helperConn) write(ctx context.Context, line []byte, answered <-chan struct{}) error {
	select {
	case hc.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-hc.done:
		return errDisconnected
	}
	defer func() { <-hc.wsem }()
	if err := hc.pace(ctx); err != nil {
		return err
	}
	_ = hc.nc.SetWriteDeadline(time.Now().Add(hc.b.opts.WriteTimeout))
	_, err := hc.nc.Write(line)
	hc.lastWrite, hc.lastAnswered = time.Now(), answered
	if err != nil {
		hc.close("writing to the helper failed: " + err.Error())
		return errDisconnected
	}
	return nil
}

// pace waits until the next write may go, so that it cannot share a socket
// read with the previous one at a helper that reads one message per read.
// With PacingAnswers that is once the previous request is answered (the
// helper has read it) or AnswerGap after it was written, whichever is
// first; with PacingFixed, WriteGap after it. A helper that frames its
// input by lines, and a negative WriteGap, need no wait. The caller holds
// wsem.
func (hc *helperConn) pace(ctx context.Context) error {
	o := hc.b.opts
	if o.WriteGap < 0 || hc.framed() {
		return nil
	}
	gap, answered := o.WriteGap, (<-chan struct{})(nil)
	if o.Pacing == PacingAnswers {
		gap, answered = o.AnswerGap, hc.lastAnswered
	}
	wait := time.Until(hc.lastWrite.Add(gap))
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-answered: // nil, never: fixed pacing, or nothing to answer
	case <-ctx.Done():
		return ctx.Err()
	case <-hc.done:
		return errDisconnected
	}
	return nil
}

var errDisconnected = errors.New("helper disconnected")
