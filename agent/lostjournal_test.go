package agent

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// relayCursor is the chat.db cursor line-relay stored for its one agent
// (nil before any CursorMark), read from relay.db as an operator would.
func relayCursor(t *testing.T, relayDir string) []byte {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(relayDir, "relay.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var c []byte
	if err := db.QueryRow(`SELECT chatdb_cursor FROM agents`).Scan(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// removeJournal deletes state.db and its -wal and -shm, as a lost disk or
// an operator's mistake would.
func removeJournal(t *testing.T, dataDir string) {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dataDir, "state.db*"))
	if len(m) == 0 {
		t.Fatal("no state.db to remove")
	}
	for _, p := range m {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLostJournalRereadsWhatTheRelayNeverAcknowledged: 500 rows arrive in
// chat.db while the relay is away, then state.db is lost with all of them
// unacknowledged. The new journal waits for the relay, takes the cursor it
// acknowledged and reads chat.db again from there: the 500 arrive once, in
// order, and the rows re-read that the relay already had are dropped by key.
func TestLostJournalRereadsWhatTheRelayNeverAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("500 rows through a real relay")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relayDir := t.TempDir()
	r := startRelay(t, relayDir, "127.0.0.1:0")
	addr := r.GRPCAddr()
	m, err := sim.New(ctx, sim.Options{Dir: t.TempDir(), Remote: sim.RemoteOptions{Disabled: true}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	chat, err := m.Store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	bo := &Backoff{Base: 50 * time.Millisecond, Cap: 300 * time.Millisecond}
	a := enrolledAgent(t, r, dataDir, &countingDriver{}, bo)
	a.o.Backend.Tailer = chatdb.NewTailer(chatdb.TailerOptions{Path: m.ChatDBPath(), Logger: testLogger(t)})
	actx, stopAgent := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(actx, nil) }()
	waitConnected(t, r, true, 10*time.Second)
	waitBaseline(t, a.journal, 20*time.Second) // rows before it are history (docs/reliability.md, "The once-flaky test")
	say := func(from, to int) {
		t.Helper()
		var msgs []sim.Msg
		for i := from; i < to; i++ {
			msgs = append(msgs, sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("msg %03d", i)})
		}
		if _, err := m.Store.InsertBatch(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	say(0, 5)
	waitEvents(t, r, a.journal, 5, 10*time.Second)
	if !eventually(10*time.Second, func() bool { return relayCursor(t, relayDir) != nil }) {
		t.Fatal("the relay never stored a cursor mark")
	}
	r.Close()
	say(5, 505)
	waitOutbox(t, a.journal, 20*time.Second, "the 500 rows in the outbox, unacknowledged", func(n int) bool { return n == 500 })
	stopAgent()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	removeJournal(t, dataDir)
	var logs syncBuffer
	a, err = New(Options{Config: Config{DataDir: dataDir, Lines: []string{testLine}, ShutdownGrace: 5 * time.Second},
		Backend: Backend{Name: "test", Driver: &countingDriver{},
			Tailer: chatdb.NewTailer(chatdb.TailerOptions{Path: m.ChatDBPath(), Logger: testLogger(t)})},
		Logger: newTestLogger(t, &logs), Backoff: bo})
	if err != nil {
		t.Fatalf("a lost state.db needs no new enrollment: %v", err)
	}
	go func() { done <- a.Run(ctx, nil) }()
	// With the relay away, nothing is read: starting at the end of chat.db
	// would skip the 500 for good.
	time.Sleep(500 * time.Millisecond)
	if c, err := a.journal.Cursor(ctx); err != nil || c != nil || a.journal.OutboxLen() != 0 {
		t.Fatalf("chat.db read before the relay's cursor arrived: cursor %d bytes (%v), outbox %d", len(c), err, a.journal.OutboxLen())
	}
	r = startRelay(t, relayDir, addr)
	defer r.Close()
	got := waitEvents(t, r, a.journal, 505, 30*time.Second)
	for i, text := range got {
		if want := fmt.Sprintf("msg %03d", i); text != want {
			t.Fatalf("event %d is %q, want %q", i, text, want)
		}
	}
	if !strings.Contains(logs.String(), "reading chat.db from the cursor the relay acknowledged") {
		t.Errorf("no log of the re-read:\n%s", logs.String())
	}
	cancel()
	<-done
}

// TestFreshEnrollmentStartsAtTheEndOfChatDB: what chat.db held before the
// agent was enrolled is history, not news; a first start reports only what
// comes after, without waiting for the relay.
func TestFreshEnrollmentStartsAtTheEndOfChatDB(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	m, err := sim.New(ctx, sim.Options{Dir: t.TempDir(), Remote: sim.RemoteOptions{Disabled: true}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	chat, err := m.Store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := m.Store.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("old %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	a := enrolledAgent(t, r, t.TempDir(), &countingDriver{}, nil)
	if wait, err := a.journal.awaitsRelayCursor(ctx); err != nil || wait {
		t.Fatalf("a fresh enrollment waits for the relay's cursor (%v)", err)
	}
	a.o.Backend.Tailer = chatdb.NewTailer(chatdb.TailerOptions{Path: m.ChatDBPath(), Logger: testLogger(t)})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	if !eventually(10*time.Second, func() bool { c, _ := a.journal.Cursor(ctx); return c != nil }) {
		t.Fatal("no baseline")
	}
	if _, err := m.Store.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: "new"}); err != nil {
		t.Fatal(err)
	}
	if got := waitEvents(t, r, a.journal, 1, 10*time.Second); got[0] != "new" {
		t.Fatalf("events %q, want only the new row", got)
	}
	cancel()
	<-done
}

// TestJournalLostAgainBeforeItsCursorStillWaits: an agent stopped after
// losing state.db but before the relay's cursor arrived must not take the
// second start for a fresh enrollment.
func TestJournalLostAgainBeforeItsCursorStillWaits(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.expectRelayCursor(ctx); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if wait, err := j.awaitsRelayCursor(ctx); err != nil || !wait {
		t.Fatalf("reopened: waits %v (%v), want true", wait, err)
	}
	if err := j.Commit(ctx, nil, []byte(`{"v":1,"rowid":7}`)); err != nil {
		t.Fatal(err)
	}
	if wait, err := j.awaitsRelayCursor(ctx); err != nil || wait {
		t.Fatalf("with a cursor stored: waits %v (%v), want false", wait, err)
	}
}

// newTestLogger logs to logs (and to the test's log with -v).
func newTestLogger(t *testing.T, logs *syncBuffer) *slog.Logger {
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, tWriter{t})
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
