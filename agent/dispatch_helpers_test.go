package agent

import (
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

func (f *frames) emit(fr *linev1.AgentFrame) {
	f.mu.Lock()
	f.all = append(f.all, fr)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// result waits (bounded) for the result of id.
func (f *frames) result(t *testing.T, id string, limit time.Duration) *linev1.CommandResult {
	t.Helper()
	timeout := time.After(limit)
	for {
		f.mu.Lock()
		for _, fr := range f.all {
			if r := fr.GetResult(); r != nil && r.GetCommandId() == id {
				f.mu.Unlock()
				return r
			}
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("no result for %s within %v", id, limit)
			return nil
		}
	}
}

// waitFor polls cond (bounded): for conditions no channel announces.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(limit); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}
