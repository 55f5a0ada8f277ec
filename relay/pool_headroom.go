package relay

import (
	"sync"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// poolHeadroom is the relay's picture of each line's new-conversation
// headroom, which choosePoolLine ranks pool lines by: the typed headroom
// the line's agent last reported (HealthReport.headroom), less what the
// relay has assigned to the line since. Agents report at every health
// check (10 s by default); counting its own assignments in between is what
// keeps a burst of new users from all landing on the line that looked
// emptiest at the last report.
//
// It lives in memory: after a relay restart each agent's next report
// (answering the health check sent straight after Welcome) brings it back,
// and until then its lines rank as "no report yet". A report outlives its
// agent's stream: a disconnected agent's quotas only free slots, so its
// last report, less the assignments since, never overstates its room.
type poolHeadroom struct {
	mu sync.Mutex
	// lines is keyed by line in its one spelling.
	lines map[string]*lineRoom
	// claims are picks whose write job has not finished yet: they hold
	// their line's headroom, so a pick in the same batch of writes sees
	// them, but count for good only once settled.
	claims map[*poolClaim]struct{}
}

// lineRoom is one line's last report.
type lineRoom struct {
	agentID string
	// left is what the report allows: the fewer of the new conversations
	// and the sends left, or -1 when neither is limited.
	left int
	// assigned is the new conversations the relay placed on the line since
	// the report.
	assigned int
	// blocked says the report had a component DOWN that a send needs
	// (routing.go): a new end user placed here would wait.
	blocked bool
}

// poolClaim is one pick's hold on its line's headroom, n new conversations
// (the members of a new group, or 1).
type poolClaim struct {
	line string
	n    int
}

func newPoolHeadroom() *poolHeadroom {
	return &poolHeadroom{lines: map[string]*lineRoom{}, claims: map[*poolClaim]struct{}{}}
}

// report replaces what agentID said before with hs, keeping only lines it
// serves (an agent speaks only for its own lines), and whether the agent
// could send now (blocked: no). The relay's count of its own assignments
// starts again from zero: the agent's counts now include those it has
// run.
func (p *poolHeadroom) report(agentID string, serves func(lineKey string) bool, hs []*linev1.LineHeadroom, blocked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, r := range p.lines {
		if r.agentID == agentID {
			delete(p.lines, k)
		}
	}
	for _, h := range hs {
		k := command.NormalizeLine(h.GetLine())
		if k == "" || !serves(k) {
			continue
		}
		p.lines[k] = &lineRoom{agentID: agentID, left: fewerLeft(int(h.GetNewConversationsLeft()), int(h.GetSendsLeft())), blocked: blocked}
	}
}

// fewerLeft is the tighter of two counts left, where a negative count is
// no limit: a line whose agent may send nothing starts no conversation.
func fewerLeft(a, b int) int {
	switch {
	case a < 0:
		return max(b, -1)
	case b < 0:
		return a
	}
	return min(a, b)
}

// pick chooses among served (a pool's served lines, in the token's order,
// with recent, their assignments in 24 h) with choosePoolLine and holds n
// of the chosen line's headroom until settle or release. nil when served
// is empty.
func (p *poolHeadroom) pick(served []string, recent map[string]int, n int) *poolClaim {
	p.mu.Lock()
	defer p.mu.Unlock()
	cands := make([]poolCandidate, 0, len(served))
	for _, l := range served {
		c := poolCandidate{line: l, recent: recent[l]}
		if r := p.lines[l]; r != nil {
			c.known, c.left, c.blocked = true, r.left, r.blocked
			if r.left >= 0 {
				c.left = max(r.left-r.assigned-p.pendingLocked(l), 0)
			}
		}
		cands = append(cands, c)
	}
	line := choosePoolLine(cands)
	if line == "" {
		return nil
	}
	c := &poolClaim{line: line, n: n}
	p.claims[c] = struct{}{}
	return c
}

// pendingLocked is what unfinished claims hold of line.
func (p *poolHeadroom) pendingLocked(line string) int {
	n := 0
	for c := range p.claims {
		if c.line == line {
			n += c.n
		}
	}
	return n
}

// settle counts c for good: its assignment was recorded. nil is no claim.
func (p *poolHeadroom) settle(c *poolClaim) {
	if c == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.claims, c)
	if r := p.lines[c.line]; r != nil {
		r.assigned += c.n
	}
}

// release gives c back: its write failed, or is running again and picks
// afresh. nil is no claim.
func (p *poolHeadroom) release(c *poolClaim) {
	if c == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.claims, c)
}
