package relay

import (
	"testing"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The relay keeps the chat.db cursor of an agent's latest CursorMark, only
// when it has stored every event the mark covers, and hands it back in
// Welcome to a journal it does not know (or that asks): that journal
// re-reads chat.db from there.
func TestCursorMarkGoesBackToANewJournal(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550000001")
	hello := func(epoch string, wants bool) *linev1.Welcome {
		t.Helper()
		a.open(a.token)
		h := a.hello()
		h.GetHello().JournalEpoch, h.GetHello().WantsChatdbCursor = epoch, wants
		a.send(h)
		return a.expect(a.cur.welcome, "Welcome").GetWelcome()
	}
	mark := func(seq uint64, cursor string) {
		a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_CursorMark{CursorMark: &linev1.CursorMark{Sequence: seq, ChatdbCursor: []byte(cursor)}}})
	}
	if w := hello("epoch-1", true); len(w.GetAckedChatdbCursor()) != 0 {
		t.Fatalf("a new agent's Welcome carries cursor %q", w.GetAckedChatdbCursor())
	}
	a.event(1, "m1/message/0", "one")
	a.event(2, "m2/message/0", "two")
	eventually(t, "2 events acked", func() bool { return a.nextAck() == 2 })
	mark(2, "cursor-2")
	// Ahead of what is stored: keeping it would let a lost journal skip
	// event 3.
	mark(3, "cursor-3")
	// A frame after the marks, acked once handled: they were handled first.
	a.event(3, "m3/message/0", "three")
	eventually(t, "event 3 acked", func() bool { return a.nextAck() == 3 })
	a.close()

	if w := hello("epoch-1", false); len(w.GetAckedChatdbCursor()) != 0 {
		t.Fatalf("the same journal got cursor %q back: it has its own", w.GetAckedChatdbCursor())
	}
	a.close()
	if w := hello("epoch-1", true); string(w.GetAckedChatdbCursor()) != "cursor-2" {
		t.Fatalf("a journal asking for the cursor got %q, want cursor-2", w.GetAckedChatdbCursor())
	}
	a.close()
	w := hello("epoch-2", false)
	if string(w.GetAckedChatdbCursor()) != "cursor-2" || w.GetStoredEventSequence() != 0 {
		t.Fatalf("new journal: cursor %q stored %d, want cursor-2 and 0", w.GetAckedChatdbCursor(), w.GetStoredEventSequence())
	}
	// The new journal's own marks replace it once its events are stored.
	a.event(1, "m3/message/0", "three")
	eventually(t, "new journal's event acked", func() bool { return a.nextAck() == 1 })
	mark(1, "cursor-new")
	a.event(2, "m4/message/0", "four")
	eventually(t, "event 2 acked", func() bool { return a.nextAck() == 2 })
	a.close()
	if w := hello("epoch-3", false); string(w.GetAckedChatdbCursor()) != "cursor-new" {
		t.Fatalf("cursor %q, want cursor-new", w.GetAckedChatdbCursor())
	}
}
