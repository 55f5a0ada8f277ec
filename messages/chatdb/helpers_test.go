package chatdb_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// sink collects what the Tailer commits, as the agent's journal would.
type sink struct {
	mu      sync.Mutex
	events  []*linev1.Event
	cursor  []byte
	commits int
	batches []int
	fail    int // fail this many commits first
	changed chan struct{}
}

func newSink() *sink { return &sink{changed: make(chan struct{}, 1)} }

func (s *sink) Commit(ctx context.Context, evs []*linev1.Event, cursor []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return fmt.Errorf("journal unavailable")
	}
	s.events = append(s.events, evs...)
	s.cursor = append([]byte(nil), cursor...)
	s.commits++
	s.batches = append(s.batches, len(evs))
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return nil
}

func (s *sink) snapshot() ([]*linev1.Event, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*linev1.Event(nil), s.events...), append([]byte(nil), s.cursor...)
}

func (s *sink) byKey() map[string]*linev1.Event {
	evs, _ := s.snapshot()
	m := map[string]*linev1.Event{}
	for _, e := range evs {
		m[e.Key] = e
	}
	return m
}

// waitKeys waits until every key has been committed.
func (s *sink) waitKeys(t *testing.T, timeout time.Duration, keys ...string) map[string]*linev1.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := s.byKey()
		var missing []string
		for _, k := range keys {
			if m[k] == nil {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %v; have %v", missing, sortedKeys(m))
		}
		select {
		case <-s.changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitCount waits until at least n events have been committed.
func (s *sink) waitCount(t *testing.T, timeout time.Duration, n int) []*linev1.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs, _ := s.snapshot()
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d events, want %d", len(evs), n)
		}
		select {
		case <-s.changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitCommits waits until at least n commits happened (the baseline is one).
func (s *sink) waitCommits(t *testing.T, timeout time.Duration, n int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		c := s.commits
		s.mu.Unlock()
		if c >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %d commits, want %d", c, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sortedKeys(m map[string]*linev1.Event) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// noDuplicates fails when a key was committed twice.
func noDuplicates(t *testing.T, evs []*linev1.Event) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.Key] {
			t.Errorf("event %s committed twice", e.Key)
		}
		seen[e.Key] = true
		if e.Sequence != 0 {
			t.Errorf("event %s has sequence %d; the outbox assigns it", e.Key, e.Sequence)
		}
	}
}

// leakCheck verifies, after every other cleanup, that no goroutine is left.
func leakCheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
}

type env struct {
	store *sim.Store
	path  string
	chat  sim.Chat
	sink  *sink
	tail  *chatdb.Tailer
	stop  func()
	done  chan error
}

// newEnv creates a simulated chat.db with one chat.
func newEnv(t *testing.T, opts ...sim.StoreOption) *env {
	t.Helper()
	leakCheck(t)
	path := filepath.Join(t.TempDir(), "Messages", "chat.db")
	if err := mkdir(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	st, err := sim.Create(path, append([]sim.StoreOption{sim.WithSeed(7)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := st.EnsureChat(context.Background(), sim.ChatSpec{Participants: []string{"+15551234567"}})
	if err != nil {
		t.Fatal(err)
	}
	return &env{store: st, path: path, chat: c, sink: newSink()}
}

// start runs a Tailer from cursor (nil = now) until the test ends or stop.
func (e *env) start(t *testing.T, cursor []byte, mod func(*chatdb.TailerOptions)) {
	t.Helper()
	o := chatdb.TailerOptions{Path: e.path, Home: "/Users/test", Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&o)
	}
	e.tail = chatdb.NewTailer(o)
	ctx, cancel := context.WithCancel(context.Background())
	e.done = make(chan error, 1)
	go func() { e.done <- e.tail.Run(ctx, cursor, e.sink) }()
	e.stop = func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil && err != context.Canceled {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("tailer did not stop")
		}
	}
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
			e.stop = nil
		}
	})
	if cursor == nil {
		e.sink.waitCommits(t, 10*time.Second, 1) // the baseline
	}
}

func (e *env) halt() {
	e.stop()
	e.stop = nil
}

func key(guid, kind, version string) string { return guid + "/" + kind + "/" + version }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
