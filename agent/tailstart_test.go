package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// gatedSink holds every commit until open is closed (or the tailer stops).
type gatedSink struct {
	Sink
	open chan struct{}
}

func (g gatedSink) Commit(ctx context.Context, evs []*linev1.Event, cursor []byte) error {
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Sink.Commit(ctx, evs, cursor)
}

// TestRestoredJournalReadsOnFromTheRelaysCursor: a state.db restored from a
// backup has a cursor behind the one the relay acknowledged. Once Welcome
// brings the relay's, the tailer reads on from there instead of re-reading
// what the relay already has.
func TestRestoredJournalReadsOnFromTheRelaysCursor(t *testing.T) {
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
	say := func(text string) int64 {
		r, err := store.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return r.RowID
	}
	newTailer := func() *chatdb.Tailer {
		return chatdb.NewTailer(chatdb.TailerOptions{Path: store.Path(), DisableWatcher: true, BackstopInterval: 10 * time.Millisecond, Logger: testLogger(t)})
	}
	// readTo runs a tailer on j until it has read to rowid.
	readTo := func(j *Journal, rowid int64) {
		t.Helper()
		start, err := j.Cursor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- newTailer().Run(tctx, start, j) }()
		ok := eventually(10*time.Second, func() bool {
			c, _ := j.Cursor(ctx)
			info, err := chatdb.DescribeCursor(c)
			return err == nil && info.MaxRowID >= rowid
		})
		cancel()
		<-done
		if !ok {
			t.Fatalf("not read to %d", rowid)
		}
	}
	backup, err := OpenJournal(filepath.Join(dir, "backup"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer backup.Close()
	readTo(backup, 0)
	readTo(backup, say("one"))
	// The relay's cursor: a newer journal read on, and the relay acked it.
	newer, err := OpenJournal(filepath.Join(dir, "newer"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	if err := newer.Commit(ctx, nil, mustCursor(t, backup)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		say(fmt.Sprintf("acked %d", i))
	}
	readTo(newer, say("acked last"))
	relays := mustCursor(t, newer)

	// The restored outbox still holds "one": it is sent as it is.
	held, err := backup.EventsAfter(ctx, 0, 100)
	if err != nil || len(held) != 1 {
		t.Fatalf("restored outbox %v (%v), want the one row", held, err)
	}
	open := make(chan struct{})
	ts := newTailStart(newTailer(), gatedSink{Sink: backup, open: open}, backup, testLogger(t))
	ts.welcome(&linev1.Welcome{AckedChatdbCursor: relays})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ts.run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && err != context.Canceled {
			t.Errorf("run: %v", err)
		}
	}()
	if !eventually(10*time.Second, func() bool { return string(mustCursor(t, backup)) == string(relays) }) {
		t.Fatal("the restored journal did not take the relay's cursor")
	}
	close(open)
	say("news")
	waitOutbox(t, backup, 10*time.Second, "the new row", func(n int) bool { return n >= 2 })
	time.Sleep(100 * time.Millisecond)
	evs, err := backup.EventsAfter(ctx, held[0].GetSequence(), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].GetMessage().GetText() != "news" {
		var texts []string
		for _, e := range evs {
			texts = append(texts, e.GetMessage().GetText())
		}
		t.Fatalf("outbox %q, want only the row after the relay's cursor", texts)
	}
}

func mustCursor(t *testing.T, j *Journal) []byte {
	t.Helper()
	c, err := j.Cursor(context.Background())
	if err != nil || c == nil {
		t.Fatalf("cursor %q: %v", c, err)
	}
	return c
}
