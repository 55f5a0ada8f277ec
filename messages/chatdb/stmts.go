package chatdb

import (
	"context"
	"database/sql"
	"strings"
	"sync"
)

// stmtCache holds the statements of the Tailer's snapshots, prepared once
// per opening of chat.db: parsing the row query alone (its column list and
// joins) cost more than reading a new row in a profile of a step inside a
// burst. Only fixed texts are kept: a query with a list of placeholders
// ("?,?") changes with the list and is run unprepared, and at most
// maxCachedStmts are kept. The statements are prepared on the pool and
// database/sql prepares each once more on the connection a transaction runs
// on (Tx.StmtContext), then reuses it there.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex // guards m and closed
	m  map[string]*sql.Stmt
	// closed: the pool is being closed; prepare nothing more.
	closed bool
}

const maxCachedStmts = 32

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, m: map[string]*sql.Stmt{}} }

// get returns the prepared statement of q, or nil when q is not kept (or
// fails to prepare: the caller then runs it unprepared and sees the error).
func (c *stmtCache) get(ctx context.Context, q string) *sql.Stmt {
	if strings.Contains(q, "?,") {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.m[q]; ok || c.closed || len(c.m) >= maxCachedStmts {
		return st
	}
	st, err := c.db.PrepareContext(ctx, q)
	if err != nil {
		return nil
	}
	c.m[q] = st
	return st
}

// close closes the statements; the pool is closed right after.
func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for q, st := range c.m {
		st.Close()
		delete(c.m, q)
	}
}

// snapTx is a snapshot's read transaction: queries run in tx, with the
// cached statement when there is one.
type snapTx struct {
	tx    *sql.Tx
	stmts *stmtCache
}

var _ querier = snapTx{}

// QueryContext runs q in the transaction.
func (t snapTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := t.stmts.get(ctx, q); st != nil {
		return t.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return t.tx.QueryContext(ctx, q, args...)
}

// QueryRowContext runs q in the transaction.
func (t snapTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := t.stmts.get(ctx, q); st != nil {
		return t.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, q, args...)
}
