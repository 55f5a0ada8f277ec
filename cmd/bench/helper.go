package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/simhelper"
)

// Rows 6a and 6b: helper commands per second through the bridge to the
// simulated helper over real loopback TCP, the helper a BlueBubbles one
// (one message per socket read, no line framing), with the fixed 200 ms
// gap and with answer pacing in the same run. docs/bridge.md, "Pacing".

const (
	pacingChat      = "iMessage;-;+15550001111"
	pacingInFlight  = 8 // commands of different chats run at once in the agent
	confettiEffect  = "com.apple.messages.effect.CKConfettiEffect"
	pacingSlowReply = 100 * time.Millisecond // slower than bridge.DefaultAnswerGap
)

// pacingRun is one burst of helper commands under one pacing.
type pacingRun struct {
	n, failed, lost int
	took            time.Duration
}

func (r pacingRun) perSec() float64 {
	if r.took <= 0 {
		return 0
	}
	return float64(r.n-r.failed) / r.took.Seconds()
}

func (r pacingRun) String() string {
	f := "%.1f/s (n=%d)"
	if r.perSec() >= 100 {
		f = "%.0f/s (n=%d)"
	}
	s := fmt.Sprintf(f, r.perSec(), r.n)
	if r.failed+r.lost > 0 {
		s += fmt.Sprintf(", %d failed, %d lost in shared reads", r.failed, r.lost)
	}
	return s
}

// helperPacing measures rows 6a (a helper answering at once) and 6b (one
// answering in 100 ms, slower than the answer gap, which then sets the
// pace).
func (b *bench) helperPacing() error {
	n := func(full, quick int) int {
		if b.quick {
			return quick
		}
		return full
	}
	type variant struct {
		row, what     string
		delay         time.Duration
		fixedN, fastN int
		target        string
		minRatio      float64
	}
	for _, v := range []variant{
		{"6a", "answering at once", 0, n(25, 10), n(2000, 400), "≥ 10× fixed", 10},
		{"6b", fmt.Sprintf("answering after %d ms, past the %d ms answer gap", pacingSlowReply.Milliseconds(), bridge.DefaultAnswerGap.Milliseconds()), pacingSlowReply, n(20, 10), n(60, 30), "≥ 3.5× fixed (the gap bounds it: 4×)", 3.5},
	} {
		logf("helper pacing %s: fixed 200 ms gap, %d commands, helper %s", v.row, v.fixedN, v.what)
		fixed, err := runHelperPacing(b.ctx, bridge.PacingFixed, v.delay, v.fixedN)
		if err != nil {
			return fmt.Errorf("%s fixed: %w", v.row, err)
		}
		logf("helper pacing %s: answer pacing, %d commands", v.row, v.fastN)
		paced, err := runHelperPacing(b.ctx, bridge.PacingAnswers, v.delay, v.fastN)
		if err != nil {
			return fmt.Errorf("%s answers: %w", v.row, err)
		}
		ratio := paced.perSec() / fixed.perSec()
		clean := paced.failed+paced.lost+fixed.failed+fixed.lost == 0
		b.add(row{
			what: fmt.Sprintf("%s helper commands/s with answer pacing, bridge → simulated BlueBubbles helper (one message per read) over loopback TCP, %s; typing, tapback, edit, send with effect, %d in flight",
				v.row, v.what, pacingInFlight),
			p99:      paced.String(),
			baseline: "fixed 200 ms gap: " + fixed.String(),
			ratio:    fmt.Sprintf("%.1f", ratio),
			target:   v.target + ", nothing lost",
			pass:     pass(clean && ratio >= v.minRatio),
		})
	}
	return nil
}

// runHelperPacing runs a bridge paced by pacing and a simulated BlueBubbles
// helper answering each request after delay, and times n commands sent
// pacingInFlight at a time.
func runHelperPacing(ctx context.Context, pacing bridge.Pacing, delay time.Duration, n int) (pacingRun, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	br, err := bridge.Listen(ctx, bridge.Options{Addr: "127.0.0.1:0", Pacing: pacing, HandshakeTimeout: 300 * time.Millisecond})
	if err != nil {
		return pacingRun{}, err
	}
	defer br.Close()
	mem := simhelper.NewMemory()
	mem.AddChat(pacingChat, "+15550001111")
	h := simhelper.New(simhelper.Options{Addr: br.Addr().String(), Messages: mem, Base: true, ChunkReads: true, Delay: delay})
	hctx, hcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(hctx) }()
	defer func() { hcancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	err = br.Wait(wctx)
	wcancel()
	if err != nil {
		return pacingRun{}, fmt.Errorf("the simulated helper did not connect: %w", err)
	}
	// The message tapbacks and edits go to, sent before the clock starts.
	target, err := br.SendText(ctx, bridge.SendTextRequest{ChatGUID: pacingChat, Text: "target"})
	if err != nil {
		return pacingRun{}, fmt.Errorf("the first send: %w", err)
	}
	jobs := make(chan int)
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range pacingInFlight {
		wg.Go(func() {
			for i := range jobs {
				if err := helperCommand(ctx, br, target.MessageGUID, i); err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	r := pacingRun{n: n, failed: int(failed.Load()), lost: h.Coalesced(), took: time.Since(start)}
	if firstErr != nil {
		logf("helper pacing %s: %d of %d failed, the first: %v", pacing, r.failed, n, firstErr)
	}
	if ctx.Err() != nil {
		return r, errors.Join(errors.New("stopped before the end"), ctx.Err())
	}
	return r, nil
}

// helperCommand is the i-th of the commands a real Mac feels the gap in:
// typing, a tapback, an edit, a send with an effect, in turn.
func helperCommand(ctx context.Context, br *bridge.Bridge, target string, i int) error {
	var err error
	switch i % 4 {
	case 0:
		err = br.Typing(ctx, pacingChat, true)
	case 1:
		_, err = br.React(ctx, bridge.ReactRequest{ChatGUID: pacingChat, TargetGUID: target, Code: 2000})
	case 2:
		err = br.Edit(ctx, bridge.EditRequest{ChatGUID: pacingChat, MessageGUID: target, Text: fmt.Sprintf("edit %d", i)})
	default:
		_, err = br.SendText(ctx, bridge.SendTextRequest{ChatGUID: pacingChat, Text: fmt.Sprintf("send %d", i), EffectID: confettiEffect})
	}
	return err
}
