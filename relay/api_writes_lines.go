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
//     served pool line with the most new-conversation headroom (for now:
//     the fewest assignments in the last 24 h, across every token; ties go
//     to the token's order), and every later call, after a restart too,
//     uses the same line;
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
	line, err := pickPoolLine(ctx, s.store.db, c.lines, false, s.now().Add(-poolWindow))
	if err != nil {
		s.log.Error("platform API: pick a pool line", "token_id", c.tokenID, "err", err)
		return "", newAPIError(classRelayFault, "the relay could not read its pool assignments")
	}
	if line == "" {
		return "", noPoolLine()
	}
	return line, nil
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
		line, err = s.store.assignPoolLine(ctx, c.tokenID, key, c.lines, first, s.now())
	}
	if err != nil {
		s.log.Error("platform API: pool assignment", "token_id", c.tokenID, "err", err)
		return "", newAPIError(classRelayFault, "the relay could not read or record the pool assignment")
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
// once agree on one line. It returns "" when no line of lines is served.
func (st *store) assignPoolLine(ctx context.Context, tokenID, key string, lines []string, first bool, now time.Time) (string, error) {
	var line string
	err := st.tx(ctx, func(tx *sql.Tx) error {
		line = ""
		err := tx.QueryRowContext(ctx, `SELECT line_key FROM pool_assignments WHERE token_id = ? AND handle_key = ?`, tokenID, key).Scan(&line)
		if err == nil || !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if line, err = pickPoolLine(ctx, tx, lines, first, now.Add(-poolWindow)); err != nil || line == "" {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO pool_assignments(token_id, handle_key, line_key, assigned_at) VALUES(?, ?, ?, ?)`,
			tokenID, key, line, now.UnixNano())
		return err
	})
	return line, err
}

// querier is what pickPoolLine reads through: the pool or a write job's
// transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// pickPoolLine chooses among lines (in the token's order) those a Mac
// serves: the first, or the one with the fewest assignments since since.
// "" when none is served.
func pickPoolLine(ctx context.Context, q querier, lines []string, first bool, since time.Time) (string, error) {
	if len(lines) == 0 {
		return "", nil
	}
	in := "(?" + strings.Repeat(", ?", len(lines)-1) + ")"
	args := make([]any, 0, len(lines)+1)
	for _, l := range lines {
		args = append(args, l)
	}
	served := map[string]bool{}
	if err := scanKeys(ctx, q, `SELECT line_key FROM line_bindings WHERE line_key IN `+in, args, func(k string, _ int) { served[k] = true }); err != nil {
		return "", err
	}
	counts := map[string]int{}
	if !first {
		if err := scanKeys(ctx, q, `SELECT line_key, COUNT(*) FROM pool_assignments WHERE assigned_at >= ? AND line_key IN `+in+` GROUP BY line_key`,
			append([]any{since.UnixNano()}, args...), func(k string, n int) { counts[k] = n }); err != nil {
			return "", err
		}
	}
	best := ""
	for _, l := range lines {
		if !served[l] {
			continue
		}
		if best == "" || counts[l] < counts[best] {
			best = l
		}
		if first {
			break
		}
	}
	return best, nil
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
