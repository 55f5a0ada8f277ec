package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// frames collects what a dispatcher emits.
type frames struct {
	mu  sync.Mutex
	all []*linev1.AgentFrame
	// changed is closed and replaced at every frame; guarded by mu.
	changed chan struct{}
}

func newFrames() *frames { return &frames{changed: make(chan struct{})} }

// journalDispatcher is a Dispatcher for testLine over a new journal, with
// a counting driver and its frames collected; the test's end stops it and
// closes the journal.
func journalDispatcher(t *testing.T) (*Journal, *Dispatcher, *countingDriver, *frames) {
	t.Helper()
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	drv := &countingDriver{}
	out := newFrames()
	ctx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(ctx, DispatcherOptions{Driver: drv, Journal: j, Emit: out.emit, Lines: []string{testLine}, Logger: testLogger(t)})
	t.Cleanup(func() {
		cancel()
		d.Wait()
		j.Close()
	})
	return j, d, drv, out
}

func (f *frames) emit(fr *linev1.AgentFrame) {
	f.mu.Lock()
	f.all = append(f.all, fr)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// waitFor waits (bounded) until cond holds for the frames emitted so far,
// looking again at each new frame.
func (f *frames) waitFor(t *testing.T, limit time.Duration, what string, cond func([]*linev1.AgentFrame) bool) {
	t.Helper()
	timeout := time.After(limit)
	for {
		f.mu.Lock()
		ok, ch := cond(f.all), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}

// result waits (bounded) for the result of id.
func (f *frames) result(t *testing.T, id string, limit time.Duration) *linev1.CommandResult {
	t.Helper()
	var res *linev1.CommandResult
	f.waitFor(t, limit, "result of "+id, func(all []*linev1.AgentFrame) bool {
		for _, fr := range all {
			if r := fr.GetResult(); r != nil && r.GetCommandId() == id {
				res = r
				return true
			}
		}
		return false
	})
	return res
}

// updates are the states the dispatcher reported for id, in order.
func updates(all []*linev1.AgentFrame, id string) []linev1.CommandState {
	var out []linev1.CommandState
	for _, f := range all {
		if u := f.GetUpdate(); u.GetCommandId() == id {
			out = append(out, u.GetState())
		}
	}
	return out
}

// eventually polls cond every 10 ms until it holds or limit passes, and
// reports whether it held. It is for what nothing announces: the state of a
// real line-relay over loopback, read through its API (a command's state,
// the agents it sees). What the agent's own code can announce (a driver run,
// an emitted frame, an outbox change) is waited for on a channel instead.
func eventually(limit time.Duration, cond func() bool) bool {
	for end := time.Now().Add(limit); !cond(); time.Sleep(10 * time.Millisecond) { // polling a real relay: see above
		if time.Now().After(end) {
			return false
		}
	}
	return true
}
