package relay

import (
	"slices"
	"testing"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The pool rule: the most headroom among lines with room, then lines with
// no report (by the old rule), then full lines; ties by 24 h assignments,
// then the token's order.
func TestPoolChoiceRanksByHeadroom(t *testing.T) {
	room := func(line string, left, recent int) poolCandidate {
		return poolCandidate{line: line, known: true, left: left, recent: recent}
	}
	unknown := func(line string, recent int) poolCandidate { return poolCandidate{line: line, recent: recent} }
	for _, tc := range []struct {
		name  string
		cands []poolCandidate
		want  string
	}{
		{"most headroom", []poolCandidate{room("a", 5, 0), room("b", 40, 9), room("c", 0, 0)}, "b"},
		{"no limit is the most", []poolCandidate{room("a", 40, 0), room("b", -1, 7)}, "b"},
		{"two without limit: fewer assignments", []poolCandidate{room("a", -1, 3), room("b", -1, 2)}, "b"},
		{"equal headroom: fewer assignments", []poolCandidate{room("a", 7, 4), room("b", 7, 1), room("c", 7, 2)}, "b"},
		{"equal everything: the token's order", []poolCandidate{room("a", 7, 1), room("b", 7, 1)}, "a"},
		{"no report: the old rule", []poolCandidate{unknown("a", 3), unknown("b", 1), unknown("c", 1)}, "b"},
		{"room known beats no report", []poolCandidate{unknown("a", 0), room("b", 1, 30)}, "b"},
		{"no report beats full", []poolCandidate{room("a", 0, 0), unknown("b", 30)}, "b"},
		{"all full: fewer assignments", []poolCandidate{room("a", 0, 5), room("b", 0, 2), room("c", 0, 3)}, "b"},
		{"none", nil, ""},
	} {
		if got := choosePoolLine(tc.cands); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// The relay's own picks count against a report until the next one, a
// pick still being written holds its room, a released one gives it back;
// an agent's report replaces only its own, and speaks only for its lines.
func TestPoolHeadroomCountsPicksUntilTheNextReport(t *testing.T) {
	const a, b, c = "+15550000001", "+15550000002", "+15550000003"
	p := newPoolHeadroom()
	mine := func(lines ...string) func(string) bool {
		return func(k string) bool { return slices.Contains(lines, k) }
	}
	p.report("agt_1", mine(a, b), headroom(map[string]int32{a: 2, b: 2, c: 50}), false)
	served := []string{a, b}
	pick := func(n int, want string) *poolClaim {
		t.Helper()
		cl := p.pick(served, nil, n)
		if cl == nil || cl.line != want {
			t.Fatalf("picked %v, want %s", cl, want)
		}
		return cl
	}
	c1 := pick(1, a) // a tie: the token's order
	c2 := pick(1, b) // a's room is held by c1
	p.release(c2)
	p.settle(c1)
	p.settle(pick(1, b)) // a 1 left, b 2
	c4 := pick(1, a)     // 1 and 1: the token's order
	p.release(c4)
	pick(1, a) // given back: still a tie, not b
	if cl := p.pick([]string{c}, nil, 1); cl == nil || p.lines[c] != nil {
		t.Fatalf("a line the agent does not serve took its report: %v", p.lines[c])
	}

	// A new report starts the relay's count again; a group holds as many
	// as it has members.
	p = newPoolHeadroom()
	p.report("agt_1", mine(a), headroom(map[string]int32{a: 0}), false)
	p.report("agt_2", mine(b), headroom(map[string]int32{b: 3}), false)
	p.settle(pick(2, b))
	p.settle(pick(1, b))
	if cl := p.pick(served, map[string]int{a: 4, b: 1}, 1); cl.line != b {
		t.Fatalf("all full: %s, want %s (fewer assignments in 24 h)", cl.line, b)
	} else {
		p.release(cl)
	}
	p.report("agt_2", mine(b), headroom(map[string]int32{b: 1}), false)
	if r := p.lines[a]; r == nil || r.left != 0 {
		t.Fatalf("agt_2's report dropped agt_1's line: %v", r)
	}
	p.report("agt_1", mine(a), nil, false)
	if p.lines[a] != nil {
		t.Fatal("a report without headroom kept the agent's old one")
	}
	pick(1, b)

	// No sends left is no room, whatever the new conversations say.
	p.report("agt_2", mine(b), []*linev1.LineHeadroom{{Line: b, NewConversationsLeft: 40, SendsLeft: 0}}, false)
	if r := p.lines[b]; r.left != 0 {
		t.Fatalf("no sends left: %d new conversations left, want 0", r.left)
	}
	p.report("agt_2", mine(b), []*linev1.LineHeadroom{{Line: b, NewConversationsLeft: -1, SendsLeft: -1}}, false)
	if r := p.lines[b]; r.left != -1 {
		t.Fatalf("no limits: %d left, want -1", r.left)
	}
}

func headroom(left map[string]int32) []*linev1.LineHeadroom {
	var out []*linev1.LineHeadroom
	for l, n := range left {
		out = append(out, &linev1.LineHeadroom{Line: l, NewConversationsLeft: n, SendsLeft: -1})
	}
	return out
}

// A line whose agent cannot send now (a component a send needs is DOWN)
// ranks after every other served line, even one known to be full; when
// every line is so, the best of them is still chosen, and the command
// waits there.
func TestPoolAvoidsALineWhoseAgentCannotSend(t *testing.T) {
	a, b := "+15550000001", "+15550000002"
	served := []string{a, b}
	mine := func(ls ...string) func(string) bool {
		return func(k string) bool { return slices.Contains(ls, k) }
	}
	p := newPoolHeadroom()
	p.report("agt_1", mine(a), headroom(map[string]int32{a: 50}), true)
	p.report("agt_2", mine(b), headroom(map[string]int32{b: 0}), false)
	if cl := p.pick(served, nil, 1); cl.line != b {
		t.Fatalf("picked %s; want %s: full, but its agent can send", cl.line, b)
	} else {
		p.release(cl)
	}
	p.report("agt_2", mine(b), headroom(map[string]int32{b: 3}), true)
	if cl := p.pick(served, nil, 1); cl.line != a {
		t.Fatalf("both blocked: picked %s; want %s, the one with more room", cl.line, a)
	}
}
