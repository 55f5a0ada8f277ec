package relay

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/line-agent/line-agent/command"
)

// Which line a platform API write goes out on. The SDK never sends the
// phone (it only picks a client in the app), so the bearer token decides:
//
//   - a dedicated token names one line, and every call uses it;
//   - a pool token names several, and each end user keeps one line of the
//     pool (pool_assignments, keyed by token and the person's handle in its
//     one spelling): the first call that talks to a handle records the
//     served pool line with the most new-conversation headroom, as its
//     agent last reported it less the relay's assignments since
//     (choosePoolLine has the whole rule), and every later call, after a
//     restart too, uses the same line;
//   - a group (any;+;<id>) uses the line recorded for that chat: the one
//     its CreateChat went out on, or the one an earlier call used; a group
//     the relay has no record of goes to the first served line of the pool,
//     which is recorded for it.
//
// "Served" means a Mac is bound to the line (line_bindings): a new end
// user is never pinned to a line no Mac holds. A pool none of whose lines
// is served is UNAVAILABLE (classNoAgent), and nothing is recorded.

// poolWindow is how far back assignments count against a line's headroom.
const poolWindow = 24 * time.Hour

// groupKey is a group's key in pool_assignments. A handle never starts
// with "+;", so it cannot collide with an end user's key.
func groupKey(g command.ChatGUID) string { return g.Key() }

// lineForChat is the line for a call about the existing chat g.
func (s *Server) lineForChat(ctx context.Context, c *apiCaller, g command.ChatGUID) (string, *apiError) {
	if !c.pool {
		return c.lines[0], nil
	}
	key, first := g.ID, false
	if g.Group {
		key, first = groupKey(g), true
	}
	return s.poolLine(ctx, c, key, first)
}

// lineForNewChat is the line for CreateChat with these handles (already in
// their one spelling): a one-to-one chat is the end user's line; a new
// group goes on the pool line with the most headroom, recorded for the
// group once the agent names it (recordGroupLine).
func (s *Server) lineForNewChat(ctx context.Context, c *apiCaller, handles []string) (string, *apiError) {
	switch {
	case !c.pool:
		return c.lines[0], nil
	case len(handles) == 1:
		return s.poolLine(ctx, c, handles[0], false)
	}
	// Each member the line never talked to is a new conversation for its
	// agent; the group is recorded only once the agent names it, so the
	// pick counts at once.
	claim, err := pickPoolLine(ctx, s.store.db, s.hub.headroom, c.lines, s.now().Add(-poolWindow), len(handles))
	if err != nil {
		s.log.Error("platform API: pick a pool line", "token_id", c.tokenID, "err", err)
		return "", storeFault(err, "the relay could not read its pool assignments")
	}
	if claim == nil {
		return "", noPoolLine()
	}
	s.hub.headroom.settle(claim)
	return claim.line, nil
}

// recordGroupLine remembers the line a new group was created on, so later
// calls about it use the same line.
func (s *Server) recordGroupLine(ctx context.Context, c *apiCaller, g command.ChatGUID, line string) {
	if !c.pool || !g.Group {
		return
	}
	if _, err := s.store.exec(ctx, `INSERT INTO pool_assignments(token_id, handle_key, line_key, assigned_at) VALUES(?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		c.tokenID, groupKey(g), line, s.now().UnixNano()); err != nil {
		s.log.Warn("platform API: record a new group's line", "token_id", c.tokenID, "err", err)
	}
}

func noPoolLine() *apiError {
	return newAPIError(classNoAgent, "no line of this token's pool is served by a Mac: enroll one (line-agent enroll) or check the lines of the token")
}

// poolLine returns the line recorded for key, recording one first.
func (s *Server) poolLine(ctx context.Context, c *apiCaller, key string, first bool) (string, *apiError) {
	line, err := s.store.poolAssignment(ctx, c.tokenID, key)
	if err == nil && line == "" {
		line, err = s.store.assignPoolLine(ctx, s.hub.headroom, c.tokenID, key, c.lines, first, s.now())
	}
	if err != nil {
		s.log.Error("platform API: pool assignment", "token_id", c.tokenID, "err", err)
		return "", storeFault(err, "the relay could not read or record the pool assignment")
	}
	if line == "" {
		return "", noPoolLine()
	}
	return line, nil
}

// poolAssignment returns the line recorded for (tokenID, key), or "".
func (st *store) poolAssignment(ctx context.Context, tokenID, key string) (string, error) {
	var line string
	err := st.db.QueryRowContext(ctx, `SELECT line_key FROM pool_assignments WHERE token_id = ? AND handle_key = ?`, tokenID, key).Scan(&line)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return line, err
}

// assignPoolLine returns the line recorded for (tokenID, key), recording
// the pick first when there is none, in one write job: two first calls at
// once agree on one line, and two picks for different keys see each
// other's hold on h. first takes the first served line instead of the one
// with the most headroom. It returns "" when no line of lines is served.
// A pick another process recorded first (PostgreSQL) is the one: the
// insert does nothing and the recorded line is read.
func (st *store) assignPoolLine(ctx context.Context, h *poolHeadroom, tokenID, key string, lines []string, first bool, now time.Time) (string, error) {
	var line string
	var claim *poolClaim
	err := st.tx(ctx, func(tx *sql.Tx) error {
		// A job may run again (groupcommit): its last run's pick is the one.
		h.release(claim)
		line, claim = "", nil
		err := tx.QueryRowContext(ctx, `SELECT line_key FROM pool_assignments WHERE token_id = ? AND handle_key = ?`, tokenID, key).Scan(&line)
		if err == nil || !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if first {
			line, err = firstServedLine(ctx, tx, lines)
		} else if claim, err = pickPoolLine(ctx, tx, h, lines, now.Add(-poolWindow), 1); claim != nil {
			line = claim.line
		}
		if err != nil || line == "" {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO pool_assignments(token_id, handle_key, line_key, assigned_at) VALUES(?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			tokenID, key, line, now.UnixNano())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		h.release(claim)
		claim = nil
		return tx.QueryRowContext(ctx, `SELECT line_key FROM pool_assignments WHERE token_id = ? AND handle_key = ?`, tokenID, key).Scan(&line)
	})
	if err != nil {
		h.release(claim)
		return "", err
	}
	h.settle(claim)
	return line, nil
}

// querier is what the pool picks read through: the pool or a write job's
// transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// pickPoolLine reads which of lines (in the token's order) a Mac serves
// and their assignments since since, and picks one of them through h (the
// rule is choosePoolLine's), holding n of its headroom. nil when none is
// served.
func pickPoolLine(ctx context.Context, q querier, h *poolHeadroom, lines []string, since time.Time, n int) (*poolClaim, error) {
	served, err := servedPoolLines(ctx, q, lines)
	if err != nil || len(served) == 0 {
		return nil, err
	}
	in, args := lineArgs(served)
	recent := map[string]int{}
	if err := scanKeys(ctx, q, `SELECT line_key, COUNT(*) FROM pool_assignments WHERE assigned_at >= ? AND line_key IN `+in+` GROUP BY line_key`,
		append([]any{since.UnixNano()}, args...), func(k string, n int) { recent[k] = n }); err != nil {
		return nil, err
	}
	return h.pick(served, recent, n), nil
}

// firstServedLine is the first of lines a Mac serves, or "".
func firstServedLine(ctx context.Context, q querier, lines []string) (string, error) {
	served, err := servedPoolLines(ctx, q, lines)
	if err != nil || len(served) == 0 {
		return "", err
	}
	return served[0], nil
}

// servedPoolLines are those of lines a Mac is bound to, in lines' order.
func servedPoolLines(ctx context.Context, q querier, lines []string) ([]string, error) {
	if len(lines) == 0 {
		return nil, nil
	}
	in, args := lineArgs(lines)
	bound := map[string]bool{}
	if err := scanKeys(ctx, q, `SELECT line_key FROM line_bindings WHERE line_key IN `+in, args, func(k string, _ int) { bound[k] = true }); err != nil {
		return nil, err
	}
	var served []string
	for _, l := range lines {
		if bound[l] {
			served = append(served, l)
		}
	}
	return served, nil
}

// lineArgs is an SQL "IN (?, ...)" list for lines (at least one) and its
// arguments.
func lineArgs(lines []string) (string, []any) {
	args := make([]any, 0, len(lines)+1)
	for _, l := range lines {
		args = append(args, l)
	}
	return "(?" + strings.Repeat(", ?", len(lines)-1) + ")", args
}

// scanKeys runs a query of (line_key) or (line_key, count) rows.
func scanKeys(ctx context.Context, q querier, query string, args []any, fn func(string, int)) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	for rows.Next() {
		var k string
		var n int
		dst := []any{&k, &n}[:len(cols)]
		if err := rows.Scan(dst...); err != nil {
			return err
		}
		fn(k, n)
	}
	return rows.Err()
}
