package relay

// poolCandidate is one served line of a pool as choosePoolLine weighs it.
type poolCandidate struct {
	line string
	// known says the line's agent has reported its headroom; left is then
	// the new conversations the line may still start, less what the relay
	// assigned to it since that report, or -1 for no limit.
	known bool
	left  int
	// recent is the line's pool assignments in the last 24 h, any token.
	recent int
	// blocked says the line's agent reported a component DOWN that a send
	// needs (routing.go).
	blocked bool
}

// choosePoolLine is the one rule that places a pool's new end user (or new
// group), among cands, the served lines in the token's order. The agents
// enforce the quotas; the relay only steers new conversations to where
// they fit, so a user is refused QUOTA_EXCEEDED only when no line has
// room. The lines rank in three tiers:
//
//  1. lines with headroom left (no limit counts as the most): the most
//     headroom first, then the fewest assignments in 24 h;
//  2. lines whose agent reported no headroom yet (an older agent, or a
//     relay restarted since): the fewest assignments in 24 h, the rule
//     from before agents reported headroom. They may have room, so they
//     come before lines known to be full, and after lines known to have
//     room;
//  3. lines at zero: the fewest assignments in 24 h. Chosen only when every
//     line is full, so the end user is placed anyway and its agent answers
//     QUOTA_EXCEEDED with the true moment a slot frees;
//  4. lines whose agent cannot send now (a component a send needs is
//     DOWN: routing.go), ranked among themselves as above. Chosen only
//     when no other line is served; the command then waits, queued, for
//     the agent to recover.
//
// Any remaining tie goes to the token's order. It returns "" for no
// candidates.
func choosePoolLine(cands []poolCandidate) string {
	var best *poolCandidate
	for i := range cands {
		if c := &cands[i]; best == nil || c.betterThan(best) {
			best = c
		}
	}
	if best == nil {
		return ""
	}
	return best.line
}

// tier is c's tier in choosePoolLine, the lower the better.
func (c *poolCandidate) tier() int {
	switch {
	case c.blocked:
		return 4
	case !c.known:
		return 2
	case c.left == 0:
		return 3
	}
	return 1
}

// betterThan reports whether c ranks strictly before o; equals keep the
// earlier in the token's order.
func (c *poolCandidate) betterThan(o *poolCandidate) bool {
	if ct, ot := c.tier(), o.tier(); ct != ot {
		return ct < ot
	}
	if c.blocked && o.blocked {
		// Both wait; rank them as if they did not.
		cc, oc := *c, *o
		cc.blocked, oc.blocked = false, false
		return cc.betterThan(&oc)
	}
	if c.tier() == 1 && c.left != o.left {
		return o.left >= 0 && (c.left < 0 || c.left > o.left)
	}
	return c.recent < o.recent
}
