package relay

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/line-agent/line-agent/command"
)

// Lines are owned (DESIGN invariant 8, docs/security.md). A line is bound
// to at most one agent, recorded in line_bindings. An agent may bind a line
// when its enrollment token allows it (a token made with --lines allows
// those lines only; a token without --lines allows any line) and no other
// agent holds it; the first agent to announce (or enroll with) a free line
// gets it. A bound line moves only when an operator says so (line-relay
// line move). Commands are routed to a line's bound agent only, results are
// taken only from the agent a command was dispatched to, and events only for
// lines the sending agent holds.

// ErrAgentNotFound is returned by MoveLine for an unknown agent id, so the
// command line can say so plainly.
var ErrAgentNotFound = errors.New("relay: no such agent")

// refusedLine is an announced line the relay would not bind, and why.
type refusedLine struct {
	Line   string `json:"line"`
	Reason string `json:"reason"`
}

// lineKeys normalises and de-duplicates lines, dropping empty ones.
func lineKeys(lines []string) []string {
	var out []string
	for _, l := range lines {
		if k := lineKey(l); k != "" && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// lineKey is a line's routing key: the one spelling of command.NormalizeLine.
func lineKey(line string) string { return command.NormalizeLine(line) }

// bindLines binds every line in keys that agentID may hold and that is free,
// and returns the keys it holds now (in the order given) and the ones it
// may not have. allowed is the agent's enrollment allowance (empty: any).
// On PostgreSQL the binding read is locked, and a line another transaction
// bound between the read and the insert is that transaction's: the insert
// does nothing and the binding is read again.
func (st *store) bindLines(ctx context.Context, tx *sql.Tx, agentID string, allowed []string, lines []string, now time.Time) (held []string, refused []refusedLine, err error) {
	for _, l := range lines {
		k := lineKey(l)
		if k == "" || slices.Contains(held, k) {
			continue
		}
		if len(allowed) > 0 && !slices.Contains(allowed, k) {
			refused = append(refused, refusedLine{Line: l, Reason: "not allowed by this agent's enrollment token (line-relay token create --lines)"})
			continue
		}
		var owner string
		err := tx.QueryRowContext(ctx, `SELECT agent_id FROM line_bindings WHERE line_key = ?`+st.d.forUpdate, k).Scan(&owner)
		if errors.Is(err, sql.ErrNoRows) {
			bound, ierr := insertBinding(ctx, tx, k, l, agentID, now)
			if ierr != nil {
				return nil, nil, ierr
			}
			if bound {
				held = append(held, k)
				continue
			}
			err = tx.QueryRowContext(ctx, `SELECT agent_id FROM line_bindings WHERE line_key = ?`+st.d.forUpdate, k).Scan(&owner)
		}
		switch {
		case err != nil:
			return nil, nil, err
		case owner == agentID:
			held = append(held, k)
		default:
			refused = append(refused, refusedLine{Line: l, Reason: fmt.Sprintf("bound to agent %s; an operator moves it with: line-relay line move %s %s", owner, k, agentID)})
		}
	}
	return held, refused, nil
}

// insertBinding binds the free line key (spelled line) to agentID, and
// reports false when another transaction bound it first.
func insertBinding(ctx context.Context, tx *sql.Tx, key, line, agentID string, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `INSERT INTO line_bindings(line_key, line, agent_id, bound_at) VALUES(?, ?, ?, ?) ON CONFLICT(line_key) DO NOTHING`, key, line, agentID, now.UnixNano())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// heldLines returns which of keys agentID holds now.
func (st *store) heldLines(ctx context.Context, agentID string, keys []string) ([]string, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT line_key FROM line_bindings WHERE agent_id = ?`, agentID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var held []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		if slices.Contains(keys, k) {
			held = append(held, k)
		}
	}
	return held, rows.Err()
}

// lineOwner returns the agent a line key is bound to, or "".
func (st *store) lineOwner(ctx context.Context, key string) (string, error) {
	var owner string
	err := st.queryRow(ctx, sqlLineOwner, key).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return owner, err
}

// LineView is one bound line as GET /v1/lines and line-relay line list
// show it.
type LineView struct {
	Line    string    `json:"line"`
	AgentID string    `json:"agent_id"`
	BoundAt time.Time `json:"bound_at"`
}

func (st *store) listLines(ctx context.Context) ([]LineView, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT line_key, agent_id, bound_at FROM line_bindings ORDER BY line_key`)
	if err != nil {
		return nil, err
	}
	return collect(rows, func(rows *sql.Rows) (v LineView, err error) {
		var at int64
		err = rows.Scan(&v.Line, &v.AgentID, &at)
		v.BoundAt = time.Unix(0, at).UTC()
		return v, err
	})
}

// moveLine binds key to agentID whoever held it. The agent must exist and
// its enrollment must allow the line.
func (st *store) moveLine(ctx context.Context, line, agentID string, now time.Time) (from string, err error) {
	key := lineKey(line)
	if key == "" {
		return "", errors.New("a line is required")
	}
	err = st.tx(ctx, func(tx *sql.Tx) error {
		from = ""
		var aj string
		if err := tx.QueryRowContext(ctx, `SELECT allowed_lines FROM agents WHERE id = ?`, agentID).Scan(&aj); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("agent %q: %w", agentID, ErrAgentNotFound)
		} else if err != nil {
			return err
		}
		var allowed []string
		_ = json.Unmarshal([]byte(aj), &allowed)
		if len(allowed) > 0 && !slices.Contains(allowed, key) {
			return fmt.Errorf("agent %s's enrollment token does not allow line %s", agentID, key)
		}
		err := tx.QueryRowContext(ctx, `SELECT agent_id FROM line_bindings WHERE line_key = ?`+st.d.forUpdate, key).Scan(&from)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO line_bindings(line_key, line, agent_id, bound_at) VALUES(?, ?, ?, ?)
			ON CONFLICT(line_key) DO UPDATE SET agent_id = excluded.agent_id, bound_at = excluded.bound_at`, key, key, agentID, now.UnixNano())
		return err
	})
	return from, err
}

// MoveLine binds line to agentID (an operator's decision: the line's Mac
// was replaced, or a line was claimed by the wrong agent). The previous
// holder stops getting the line's commands at once; the new holder serves
// it from its next heartbeat. It returns the previous holder ("" if none).
func (s *Server) MoveLine(ctx context.Context, line, agentID string) (string, error) {
	from, err := s.store.moveLine(ctx, line, agentID, s.now())
	if err != nil {
		return "", err
	}
	s.log.Info("line moved by operator", "line", lineKey(line), "from", from, "to", agentID)
	s.hub.kickLine(lineKey(line))
	return from, nil
}

// MoveLine is Server.MoveLine without a running server (line-relay line
// move): a running relay sees the change at its next claim and heartbeat.
func MoveLine(at Storage, line, agentID string) (string, error) {
	st, err := at.open(false)
	if err != nil {
		return "", err
	}
	defer st.close()
	return st.moveLine(context.Background(), line, agentID, time.Now())
}

// Lines lists every bound line.
func (s *Server) Lines(ctx context.Context) ([]LineView, error) { return s.store.listLines(ctx) }

// ListLines is Lines without a running server.
func ListLines(at Storage) ([]LineView, error) {
	st, err := at.open(false)
	if err != nil {
		return nil, err
	}
	defer st.close()
	return st.listLines(context.Background())
}
