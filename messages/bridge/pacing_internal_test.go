package bridge

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/line-agent/line-agent/messages/simhelper"
)

// The timing of pacing is asserted inside testing/synctest bubbles, where
// time is exact: the bridge's own connection code and the simulated
// helper's (Serve) talk over memConn, an in-memory stream that coalesces
// like TCP (a read takes everything written since the last), because a
// real socket would keep the bubble's clock from moving. The same rules
// over real loopback TCP are in pacing_test.go.

const pacedChat = "iMessage;-;+15550001111"

// half is one direction of a memConn.
type half struct {
	mu     sync.Mutex
	buf    []byte      // guarded by mu; written, not yet read
	closed bool        // guarded by mu
	writes []time.Time // guarded by mu; when each Write happened
	ready  chan struct{}
}

func newHalf() *half { return &half{ready: make(chan struct{}, 1)} }

func (h *half) signal() {
	select {
	case h.ready <- struct{}{}:
	default:
	}
}

// read takes everything buffered (up to len(p)), as a socket read takes
// every segment that arrived since the last: two writes the reader was
// not waiting between come out as one read.
func (h *half) read(p []byte) (int, error) {
	for {
		h.mu.Lock()
		if len(h.buf) > 0 {
			n := copy(p, h.buf)
			h.buf = h.buf[n:]
			h.mu.Unlock()
			return n, nil
		}
		if h.closed {
			h.mu.Unlock()
			return 0, io.EOF
		}
		h.mu.Unlock()
		<-h.ready
	}
}

func (h *half) write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, net.ErrClosed
	}
	h.buf = append(h.buf, p...)
	h.writes = append(h.writes, time.Now())
	h.signal()
	return len(p), nil
}

func (h *half) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.signal()
}

func (h *half) writeTimes() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.writes...)
}

// memConn is one end of an in-memory stream; closing either end closes
// both directions.
type memConn struct{ in, out *half }

func memPipe() (agentEnd, helperEnd *memConn) {
	toHelper, toAgent := newHalf(), newHalf()
	return &memConn{in: toAgent, out: toHelper}, &memConn{in: toHelper, out: toAgent}
}

func (c *memConn) Read(p []byte) (int, error)       { return c.in.read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.out.write(p) }
func (c *memConn) Close() error                     { c.in.close(); c.out.close(); return nil }
func (c *memConn) LocalAddr() net.Addr              { return memAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return memAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

type memAddr struct{}

func (memAddr) Network() string { return "mem" }
func (memAddr) String() string  { return "mem" }

// pacedRun is a bridge with a simulated BlueBubbles helper (one message
// per read, no line framing) attached over a memConn, inside a bubble.
type pacedRun struct {
	b      *Bridge
	h      *simhelper.Helper
	writes *half // the bridge's writes, with their times
}

// runPaced runs fn with a bridge paced by opts and a BlueBubbles helper
// configured by ho, its handshake over; it must be called in a bubble.
func runPaced(t *testing.T, opts Options, ho simhelper.Options, fn func(r *pacedRun)) {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	b := newBridge(context.Background(), opts.withDefaults(), nil)
	defer b.Close()
	mem := simhelper.NewMemory()
	mem.AddChat(pacedChat, "+15550001111")
	ho.Messages, ho.Base, ho.ChunkReads = mem, true, true
	h := simhelper.New(ho)
	agentEnd, helperEnd := memPipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.Serve(ctx, helperEnd) }()
	defer func() { cancel(); <-done }()
	b.attach(agentEnd)
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	fn(&pacedRun{b: b, h: h, writes: agentEnd.out})
}

// burst sends n texts at once and returns the times the bridge wrote
// them (the handshake's hello left out) and how long the burst took.
func (r *pacedRun) burst(t *testing.T, n int) (writes []time.Time, took time.Duration) {
	t.Helper()
	before := len(r.writes.writeTimes())
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := r.b.SendText(context.Background(), SendTextRequest{ChatGUID: pacedChat, Text: "m" + strconv.Itoa(i)}); err != nil {
				t.Errorf("send %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	took = time.Since(start)
	if got := r.h.Coalesced(); got != 0 {
		t.Errorf("the helper lost %d requests to coalesced reads", got)
	}
	return r.writes.writeTimes()[before:], took
}

// gaps are the pauses between consecutive writes.
func gaps(ws []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ws); i++ {
		out = append(out, ws[i].Sub(ws[i-1]))
	}
	return out
}

func wantGaps(t *testing.T, what string, ws []time.Time, n int, want time.Duration) {
	t.Helper()
	if len(ws) != n {
		t.Fatalf("%s: %d writes, want %d", what, len(ws), n)
	}
	for i, g := range gaps(ws) {
		if g != want {
			t.Errorf("%s: write %d came %s after the one before, want exactly %s", what, i+1, g, want)
		}
	}
}

// A helper that answers slowly (1 s) holds no write back longer than
// AnswerGap under answer pacing; the fixed pacing waits its whole gap.
func TestPacingSlowAnswersWaitAtMostTheAnswerGap(t *testing.T) {
	const n = 5
	slow := simhelper.Options{Delay: time.Second}
	synctest.Test(t, func(t *testing.T) {
		runPaced(t, Options{Pacing: PacingAnswers, AnswerGap: 50 * time.Millisecond}, slow, func(r *pacedRun) {
			ws, took := r.burst(t, n)
			wantGaps(t, "answers", ws, n, 50*time.Millisecond)
			if want := (n-1)*50*time.Millisecond + time.Second; took != want {
				t.Errorf("the burst took %s, want %s (the last write, then its 1 s answer)", took, want)
			}
		})
	})
	synctest.Test(t, func(t *testing.T) {
		runPaced(t, Options{Pacing: PacingFixed}, slow, func(r *pacedRun) {
			ws, _ := r.burst(t, n)
			wantGaps(t, "fixed", ws, n, DefaultWriteGap)
		})
	})
}

// A helper that answers fast (2 ms) sets the pace under answer pacing:
// each write goes the moment the previous one is answered, so n commands
// take n answers' time instead of n-1 fixed gaps.
func TestPacingFastAnswersSetThePace(t *testing.T) {
	const n, answer = 20, 2 * time.Millisecond
	fast := simhelper.Options{Delay: answer}
	var byAnswers, byGap time.Duration
	synctest.Test(t, func(t *testing.T) {
		runPaced(t, Options{}, fast, func(r *pacedRun) { // the default pacing
			if r.b.opts.Pacing != PacingAnswers {
				t.Fatalf("default pacing %q", r.b.opts.Pacing)
			}
			var ws []time.Time
			ws, byAnswers = r.burst(t, n)
			wantGaps(t, "answers", ws, n, answer)
		})
	})
	synctest.Test(t, func(t *testing.T) {
		runPaced(t, Options{Pacing: PacingFixed}, fast, func(r *pacedRun) {
			var ws []time.Time
			ws, byGap = r.burst(t, n)
			wantGaps(t, "fixed", ws, n, DefaultWriteGap)
		})
	})
	if want := n * answer; byAnswers != want {
		t.Errorf("answer pacing: %d commands took %s, want %s", n, byAnswers, want)
	}
	if want := (n-1)*DefaultWriteGap + answer; byGap != want {
		t.Errorf("fixed pacing: %d commands took %s, want %s", n, byGap, want)
	}
	t.Logf("%d commands: %s paced by answers, %s by the fixed gap (%.0fx)", n, byAnswers, byGap, float64(byGap)/float64(byAnswers))
}

// A line without a transaction id is never answered: the next write
// waits the whole AnswerGap after it.
func TestPacingWithoutTransactionWaitsTheAnswerGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		runPaced(t, Options{AnswerGap: 40 * time.Millisecond}, simhelper.Options{}, func(r *pacedRun) {
			hc := r.b.current()
			before := len(r.writes.writeTimes())
			line := []byte(`{"action":"start-typing","data":{"chatGuid":"` + pacedChat + `"}}` + "\n")
			for range 3 {
				if err := hc.write(context.Background(), line, nil); err != nil {
					t.Fatal(err)
				}
			}
			wantGaps(t, "fire-and-forget", r.writes.writeTimes()[before:], 3, 40*time.Millisecond)
		})
	})
}

// What a real Mac must show (docs/bridge.md, "Pacing"): AnswerGap is safe
// only while a helper that has not answered yet reads what it is sent
// within it. A helper slower to read again than AnswerGap, and slower
// still to answer, gets two requests in one read and loses one; this is
// the limit answer pacing trades for speed, proven here so that the
// model is known to catch it.
func TestPacingAnswerGapShorterThanTheHelpersReadsLoses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ho := simhelper.Options{Delay: time.Second, ReadPause: 120 * time.Millisecond}
		runPaced(t, Options{AnswerGap: 50 * time.Millisecond, RequestTimeout: 3 * time.Second}, ho, func(r *pacedRun) {
			var wg sync.WaitGroup
			for i := range 3 {
				wg.Go(func() {
					_, _ = r.b.SendText(context.Background(), SendTextRequest{ChatGUID: pacedChat, Text: strconv.Itoa(i)})
				})
			}
			wg.Wait()
			if r.h.Coalesced() == 0 {
				t.Fatal("no request was lost though the helper read only every 120 ms and writes went every 50 ms")
			}
		})
	})
}
