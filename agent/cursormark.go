package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// A cursor mark is a chat.db cursor the relay has acknowledged every event
// before: when the journal is lost, the relay hands the latest one back and
// the new journal reads chat.db on from there (docs/reliability.md, "A lost
// or restored state.db").
//
// The journal stores its cursor with the events it covers, but events are
// acknowledged later, and by then the tailer has usually moved on. So the
// journal follows a candidate: the cursor of some commit and the highest
// sequence assigned by then. Once the relay acknowledges that sequence the
// candidate becomes the ready mark and the latest commit becomes the next
// candidate, so marks keep coming under a steady flow of events, where the
// outbox is never empty, and at most three cursors are ever held.
type cursorMark struct {
	seq    uint64
	cursor []byte
	gen    uint64 // counts ready marks, so a stream sends each once
}

// cursorMarks is the journal's bookkeeping of marks; its methods lock mu.
type cursorMarks struct {
	mu     sync.Mutex
	acked  uint64
	gen    uint64
	latest *cursorMark // the last cursor committed
	cand   *cursorMark // waiting for the ack of its sequence
	ready  *cursorMark // the newest covered one
}

// committed notes that cursor was stored when seq was the highest sequence
// the outbox had assigned; it reports whether a new mark is ready.
func (m *cursorMarks) committed(seq uint64, cursor []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.latest = &cursorMark{seq: seq, cursor: cursor}
	if seq <= m.acked {
		m.cand = nil
		return m.promote(m.latest)
	}
	if m.cand == nil {
		m.cand = m.latest
	}
	return false
}

// ackedUpTo notes the relay's acknowledgement of every event up to seq; it
// reports whether a new mark is ready.
func (m *cursorMarks) ackedUpTo(seq uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if seq <= m.acked {
		return false
	}
	m.acked = seq
	switch {
	case m.latest != nil && m.latest.seq <= seq:
		m.cand = nil
		return m.promote(m.latest)
	case m.cand != nil && m.cand.seq <= seq:
		ok := m.promote(m.cand)
		m.cand = m.latest
		return ok
	}
	return false
}

func (m *cursorMarks) promote(c *cursorMark) bool {
	if m.ready != nil && m.ready.seq == c.seq && string(m.ready.cursor) == string(c.cursor) {
		return false
	}
	m.gen++
	m.ready = &cursorMark{seq: c.seq, cursor: c.cursor, gen: m.gen}
	return true
}

// Ready returns the newest mark whose events the relay has all
// acknowledged, if there is one.
func (m *cursorMarks) Ready() (cursorMark, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ready == nil {
		return cursorMark{}, false
	}
	return *m.ready, true
}

// loadMarks starts the bookkeeping from what state.db holds: the stored
// cursor covers every sequence assigned so far.
func (j *Journal) loadMarks(ctx context.Context) error {
	cur, err := j.Cursor(ctx)
	if err != nil || cur == nil {
		return err
	}
	acked, err := j.Acked(ctx)
	if err != nil {
		return err
	}
	top, err := topSequence(ctx, j.db)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	j.marks.acked = acked
	j.marks.committed(top, cur)
	return nil
}

type rowQueryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// topSequence is the highest sequence the outbox ever assigned, including
// those acknowledged and deleted since.
func topSequence(ctx context.Context, q rowQueryer) (uint64, error) {
	var top int64
	err := q.QueryRowContext(ctx, `SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)`).Scan(&top)
	return uint64(top), err
}

// expectRelayCursor records that this journal must take its chat.db cursor
// from the relay: state.db was missing at start, so reading from the end
// of chat.db would skip what arrived meanwhile and what the lost journal
// never got acknowledged. It holds until a cursor is stored, also across a
// crash before then.
func (j *Journal) expectRelayCursor(ctx context.Context) error {
	if err := j.write(func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO kv(k, v) VALUES('chatdb_cursor_from', 'relay') ON CONFLICT(k) DO UPDATE SET v = excluded.v`)
		return err
	}); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// awaitsRelayCursor reports whether chat.db reading must wait for the
// relay's acknowledged cursor: the journal has no cursor and was not
// created by enrollment (where chat.db's past is history, not news).
func (j *Journal) awaitsRelayCursor(ctx context.Context) (bool, error) {
	var n int
	err := j.db.QueryRowContext(ctx, `SELECT count(*) FROM kv WHERE k = 'chatdb_cursor_from' AND v = 'relay'
		AND NOT EXISTS (SELECT 1 FROM kv WHERE k = 'chatdb_cursor')`).Scan(&n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("journal: %w", err)
	}
	return n > 0, nil
}
