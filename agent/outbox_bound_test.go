package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// peakSink is the journal as the tailer's sink, noting the largest outbox
// each commit left behind: commits are the only thing that grows it.
type peakSink struct {
	j    *Journal
	mu   sync.Mutex
	peak int
}

func (p *peakSink) Commit(ctx context.Context, evs []*linev1.Event, cursor []byte) error {
	err := p.j.Commit(ctx, evs, cursor)
	p.mu.Lock()
	p.peak = max(p.peak, p.j.OutboxLen())
	p.mu.Unlock()
	return err
}

func (p *peakSink) max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// TestOutboxBoundedWhileRelayWithholdsAcks is "bounded" for inbound: ten
// times the outbox limit arrives in chat.db while nothing is acknowledged.
// The outbox never holds more than its limit, the tailer reads no further
// ahead than the outbox holds (chat.db keeps the rest), a tailer restarted
// meanwhile resumes from the stored cursor, and once acks resume every row
// arrives once, in order.
func TestOutboxBoundedWhileRelayWithholdsAcks(t *testing.T) {
	const limit, rows = 50, 500
	ctx := context.Background()
	dir := t.TempDir()
	store, err := sim.Create(filepath.Join(dir, "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	chat, err := store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	j, err := OpenJournal(filepath.Join(dir, "agent"), limit)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	sink := &peakSink{j: j}
	tail := func(start []byte) (stop func()) {
		tctx, cancel := context.WithCancel(ctx)
		tr := chatdb.NewTailer(chatdb.TailerOptions{Path: store.Path(), BatchSize: 10, DisableWatcher: true,
			BackstopInterval: 10 * time.Millisecond, Logger: testLogger(t)})
		done := make(chan error, 1)
		go func() { done <- tr.Run(tctx, start, sink) }()
		return func() {
			cancel()
			if err := <-done; err != context.Canceled {
				t.Errorf("tailer ended with %v", err)
			}
		}
	}
	stop := tail(nil)
	if !eventually(10*time.Second, func() bool { c, _ := j.Cursor(ctx); return c != nil }) {
		t.Fatal("no baseline cursor")
	}
	msgs := make([]sim.Msg, rows)
	for i := range msgs {
		msgs[i] = sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("msg %03d", i)}
	}
	inserted, err := store.InsertBatch(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	waitOutbox(t, j, 10*time.Second, "outbox full", func(n int) bool { return n == limit })
	// Give the tailer time to overrun the bound if it were going to.
	time.Sleep(300 * time.Millisecond)
	readTo := func() int64 {
		c, err := j.Cursor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		info, err := chatdb.DescribeCursor(c)
		if err != nil {
			t.Fatal(err)
		}
		return info.MaxRowID
	}
	if n, to := j.OutboxLen(), readTo(); n != limit || to != inserted[limit-1].RowID {
		t.Fatalf("with no acks: outbox %d (limit %d), chat.db read to ROWID %d, want %d: it read ahead of the outbox",
			n, limit, to, inserted[limit-1].RowID)
	}
	// A restart in the middle of the outage resumes from the stored cursor.
	stop()
	start, err := j.Cursor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tail(start)()

	var texts []string
	var acked uint64
	for deadline := time.Now().Add(30 * time.Second); len(texts) < rows; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d rows arrived", len(texts), rows)
		}
		changed := j.Changed()
		evs, err := j.EventsAfter(ctx, acked, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			select {
			case <-changed:
			case <-time.After(time.Second):
			}
			continue
		}
		for _, ev := range evs {
			texts = append(texts, ev.GetMessage().GetText())
			acked = ev.GetSequence()
		}
		if err := j.Ack(ctx, acked); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range texts {
		if want := fmt.Sprintf("msg %03d", i); s != want {
			t.Fatalf("event %d is %q, want %q", i, s, want)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := j.OutboxLen(); n != 0 {
		t.Fatalf("%d more events after all %d rows: doubles", n, rows)
	}
	if p := sink.max(); p > limit {
		t.Fatalf("the outbox held %d events, over its limit %d", p, limit)
	}
}
