package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
)

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMissingJournalIsAnnounced: an enrolled agent whose state.db vanished
// numbers its events from 1 again; it must say so, loudly, at start. A
// first start after enrollment is not that.
func TestMissingJournalIsAnnounced(t *testing.T) {
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	ctx := context.Background()
	tok, err := r.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Enroll(ctx, EnrollOptions{DialOptions: DialOptions{Addr: r.GRPCAddr(), CAFile: r.CAFile()}, Token: tok, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	open := func() string {
		t.Helper()
		var logs syncBuffer
		a, err := New(Options{Config: Config{DataDir: dir, Lines: []string{testLine}},
			Backend: Backend{Name: "test", Driver: &countingDriver{}}, Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tWriter{t}), nil))})
		if err != nil {
			t.Fatal(err)
		}
		a.journal.Close()
		return logs.String()
	}
	if logs := open(); strings.Contains(logs, "state.db was missing") {
		t.Fatalf("first start after enrollment warned about a missing journal:\n%s", logs)
	}
	if logs := open(); strings.Contains(logs, "state.db was missing") {
		t.Fatalf("a start with its journal warned:\n%s", logs)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "state.db*"))
	for _, p := range m {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	logs := open()
	if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "state.db was missing: new journal epoch ") ||
		!strings.Contains(logs, "events are numbered from 1 again") {
		t.Fatalf("no warning after state.db was removed:\n%s", logs)
	}
}

func TestJournalEpoch(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := j.Epoch()
	if !j.Created() || len(first) != 32 {
		t.Fatalf("new journal: created %v, epoch %q", j.Created(), first)
	}
	j.Close()
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if j.Created() || j.Epoch() != first {
		t.Fatalf("reopened journal: created %v, epoch %q, want %q", j.Created(), j.Epoch(), first)
	}
	j.Close()
	m, _ := filepath.Glob(filepath.Join(dir, "state.db*"))
	for _, p := range m {
		os.Remove(p)
	}
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if !j.Created() || j.Epoch() == first || j.Epoch() == "" {
		t.Fatalf("re-created journal: created %v, epoch %q (old %q)", j.Created(), j.Epoch(), first)
	}
}

func TestHelloCarriesJournalEpoch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, nil)
		s := startSession(t, r, nil)
		h := r.stream(1).hello
		if h.GetJournalEpoch() == "" || h.GetJournalEpoch() != s.journal.Epoch() {
			t.Errorf("Hello.journal_epoch %q, want the journal's %q", h.GetJournalEpoch(), s.journal.Epoch())
		}
		if h.GetAgentId() != "agt" || h.GetAckedEventSequence() != 0 {
			t.Errorf("Hello %v", h)
		}
	})
}
