package relay

import "testing"

// kickLine wakes exactly the live streams that hold the line: not a
// stream that only announced it, not one replaced or gone, and a stream
// that took the line over without a reconnect once it holds it.
func TestKickLineWakesTheStreamsHoldingTheLine(t *testing.T) {
	h := newHub()
	stream := func(agent string, announced, held []string) *session {
		ss := &session{agentID: agent, kick: make(chan struct{}, 1), announced: announced}
		ss.held.Store(&held)
		return ss
	}
	kicked := func(ss *session) bool {
		select {
		case <-ss.kick:
			return true
		default:
			return false
		}
	}
	a := stream("a", []string{"+1", "+2"}, []string{"+1"})
	b := stream("b", []string{"+2", "+3"}, []string{"+2", "+3"})
	h.attach(a)
	h.attach(b)
	h.kickLine("+2")
	if kicked(a) || !kicked(b) {
		t.Fatal("+2: want only b, which holds it (a only announced it)")
	}
	h.kickLine("+9")
	if kicked(a) || kicked(b) {
		t.Fatal("a line nobody announced woke a stream")
	}
	// a's new stream replaces the old one, which is no longer woken.
	a2 := stream("a", []string{"+1"}, []string{"+1"})
	if old := h.attach(a2); old != a {
		t.Fatalf("attach replaced %v, want a's first stream", old)
	}
	h.kickLine("+1")
	if kicked(a) || !kicked(a2) {
		t.Fatal("+1: want a's new stream only")
	}
	// b lets +2 go (an operator moved it to an agent not connected): no
	// stream holds it, so none is woken.
	none := []string{"+3"}
	b.held.Store(&none)
	h.kickLine("+2")
	if kicked(a2) || kicked(b) {
		t.Fatal("+2 after b let it go woke a stream")
	}
	if !h.detach(b) {
		t.Fatal("detach b")
	}
	h.kickLine("+3")
	if kicked(b) {
		t.Fatal("a detached stream was woken")
	}
	if len(h.byLine) != 1 || len(h.byLine["+1"]) != 1 {
		t.Fatalf("index left behind %v", h.byLine)
	}
}
