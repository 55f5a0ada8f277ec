package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The statements the relay runs for every command, event and platform API
// call, prepared once when the store opens. Pure-Go SQLite otherwise parses
// each one anew on every call: a CPU profile of rows 4a and 5a put SQLite's
// parser at about a quarter of the process (docs/benchmarks.md). The rest
// (enrollment, Hello, operator reads, the sweeper) is rare and parsed per
// call. A statement takes a fixed number of arguments, so a list of line
// keys is passed as one JSON array (json_each) instead of an IN list whose
// text depends on its length. The statements whose text differs between
// SQLite and PostgreSQL (the claim, the event sequence read, the event
// insert) are the dialect's (store_dialect.go).
const (
	// A command's way through the relay: submitted (line owner, insert),
	// claimed by its agent's stream (in flight, queued, dispatched),
	// updated, finished with its blobs dropped, read by id.
	sqlLineOwner     = `SELECT agent_id FROM line_bindings WHERE line_key = ?`
	sqlInsertCommand = `INSERT INTO commands(id, line, line_key, kind, command, state, deadline, created_at, updated_at, fingerprint, needs)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`
	sqlCommand  = `SELECT ` + commandCols + ` FROM commands WHERE id = ?`
	sqlInFlight = `SELECT COUNT(*) FROM commands WHERE agent_id = ? AND state IN (?, ?, ?)`
	// sqlUnfinished is what a new stream redelivers.
	sqlUnfinished = `SELECT ` + commandCols + ` FROM commands WHERE agent_id = ? AND state IN (?, ?, ?) ORDER BY created_at, rowid`
	// The claim of queued commands is dialect.claim: the binding is
	// checked there too, not only in the session's held set, so a line an
	// operator moved away is never claimed again.
	sqlUpdateCommand = `UPDATE commands SET
		state = CASE WHEN ? = 'in_progress' THEN 'in_progress' WHEN state = 'dispatched' THEN 'accepted' ELSE state END,
		progress = COALESCE(?, progress),
		detail = CASE WHEN ? <> '' THEN ? ELSE detail END,
		updated_at = ?
		WHERE id = ? AND agent_id = ? AND state IN (?, ?, ?)`
	// sqlFinishCommand returns the final row it wrote, so the calls
	// waiting for it are answered without reading it back
	// (api_writes_wait.go).
	sqlFinishCommand = `UPDATE commands SET state = ?, result = ?, error_code = ?, error_message = ?, error = ?, updated_at = ?
		WHERE id = ? AND agent_id = ? AND state IN (?, ?, ?) RETURNING ` + commandCols
	sqlDeleteBlobs = `DELETE FROM blob_chunks WHERE command_id = ?`

	// Events from an agent's stream, and the operator's long poll.
	// (the insert is dialect.insertEvent; PostgreSQL locks the agent's row
	// as it reads sqlEventSeq, dialect.eventSeq)
	sqlEventSeq    = `SELECT event_seq FROM agents WHERE id = ?`
	sqlHoldsLine   = `SELECT 1 FROM line_bindings WHERE line_key = ? AND agent_id = ?`
	sqlSetEventSeq = `UPDATE agents SET event_seq = ? WHERE id = ?`

	// sqlStreamEpoch reads the fencing token of a stream's writes
	// (dialect.streamEpoch, store.fenced).
	sqlStreamEpoch = `SELECT stream_epoch FROM agents WHERE id = ?`
	sqlEventsAfter = `SELECT relay_seq, agent_id, event FROM events WHERE relay_seq > ? ORDER BY relay_seq LIMIT ?`

	// The platform API's token check, on every call.
	sqlAPICaller = `SELECT id, lines, pool, revoked_at FROM api_tokens WHERE hash = ?`
)

// hotStatements is every statement prepare readies, in d's text.
func (d *dialect) hotStatements() []string {
	hot := []string{
		sqlLineOwner, sqlInsertCommand, sqlCommand, sqlUnfinished, d.claim,
		sqlUpdateCommand, sqlFinishCommand, sqlDeleteBlobs,
		d.eventSeq, sqlHoldsLine, d.insertEvent, sqlSetEventSeq, sqlEventsAfter,
		sqlAPICaller, d.streamEpoch,
	}
	if d.notify != "" {
		hot = append(hot, d.notify)
	}
	return hot
}

// prepare readies the hot statements once the schema is current and before
// the writer runs (preparing later, from inside a write, could wait for a
// connection the write holds). database/sql then prepares each once per
// connection and reuses it.
func (st *store) prepare() error {
	hot := st.d.hotStatements()
	st.stmts = make(map[string]*sql.Stmt, len(hot))
	for _, q := range hot {
		p, err := st.db.Prepare(q)
		if err != nil {
			return fmt.Errorf("prepare %.40q: %w", q, errors.Join(err, st.closeStmts()))
		}
		st.stmts[q] = p
	}
	return nil
}

// closeStmts closes the prepared statements; the store calls it once its
// writer has stopped, before it closes the database. The map stays as it
// is (a late reader may still look in it): a closed statement fails as a
// closed database would.
func (st *store) closeStmts() error {
	var errs []error
	for _, p := range st.stmts {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// queryRow runs a one-row read outside any write: prepared when hot,
// parsed otherwise.
func (st *store) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	if p := st.stmts[q]; p != nil {
		return p.QueryRowContext(ctx, args...)
	}
	return st.db.QueryRowContext(ctx, q, args...)
}

// query runs a read outside any write: prepared when hot, parsed
// otherwise.
func (st *store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if p := st.stmts[q]; p != nil {
		return p.QueryContext(ctx, args...)
	}
	return st.db.QueryContext(ctx, q, args...)
}

// txStmt is q inside the write tx, prepared when hot (on tx's connection
// once, then reused), nil otherwise.
func (st *store) txStmt(ctx context.Context, tx *sql.Tx, q string) *sql.Stmt {
	if p := st.stmts[q]; p != nil {
		return tx.StmtContext(ctx, p)
	}
	return nil
}

// txExec runs a statement inside the write tx.
func (st *store) txExec(ctx context.Context, tx *sql.Tx, q string, args ...any) (sql.Result, error) {
	if p := st.txStmt(ctx, tx, q); p != nil {
		return p.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}

// txQuery runs a read inside the write tx.
func (st *store) txQuery(ctx context.Context, tx *sql.Tx, q string, args ...any) (*sql.Rows, error) {
	if p := st.txStmt(ctx, tx, q); p != nil {
		return p.QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, q, args...)
}

// txQueryRow runs a one-row read inside the write tx.
func (st *store) txQueryRow(ctx context.Context, tx *sql.Tx, q string, args ...any) *sql.Row {
	if p := st.txStmt(ctx, tx, q); p != nil {
		return p.QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, q, args...)
}
