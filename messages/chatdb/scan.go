package chatdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// scanner finds what changed in chat.db since a cursor. It has no goroutines
// and no timers: the Tailer decides when to call it. It is used by one
// goroutine at a time (the Tailer's Run or CatchUp).
type scanner struct {
	r    *Reader
	conv *converter
	cfg  scanConfig

	// last is what the previous step saw, for the next step's fast path.
	last lastStep
	// owed: a step since the last read of the window skipped it (see
	// scanConfig.windowEvery), so the cursor's states may lag the rows.
	owed bool
	// windowAt is when (on cfg.now) the window was last read.
	windowAt time.Time
	// queries caches the image queries of the schema they were built for.
	queries struct {
		sc *schema
		q  imageQueries
	}
	// windowFn, when set, reads the window instead of window's two passes:
	// the benchmark's baseline sets the row-per-row read they replaced.
	windowFn func(ctx context.Context, tx querier, sc *schema, upTo int64) ([]windowRow, error)
}

// lastStep is what a complete step (one that left nothing for a following
// step) saw: the snapshot it read (data_version on the Reader's fixed
// connection, and the connection's generation) and the cursor the Tailer
// holds after it (next when the step changed something, else the cursor it
// was given). A step given that same cursor that finds the same snapshot
// has nothing to do: no other connection committed since, so every query
// would return what it returned then.
type lastStep struct {
	ok  bool
	v   dataVersion
	cur *cursor
}

// scanConfig bounds the work of one step and sets the history policy.
type scanConfig struct {
	batch          int           // rows per step (inserts plus updated rows)
	windowAge      time.Duration // updates are tracked for rows this recent...
	windowRows     int           // ...and at most this many of them
	historicalAge  time.Duration // rows older than this (see isHistorical) are history
	skipHistorical bool          // drop history instead of emitting it flagged
	clock          func() time.Time
	// windowEvery is the least time between two reads of the window while
	// commits keep coming: a step within it of the last read reads the new
	// rows only and leaves the window to a step at windowDue. Zero reads it
	// on every commit.
	windowEvery time.Duration
	// now measures windowEvery: elapsed time (time.Now, monotonic, like the
	// Tailer's timers), not the wall clock, which may be set anywhere.
	now func() time.Time
}

// stepResult is one bounded batch of changes.
type stepResult struct {
	events  []*linev1.Event
	next    *cursor
	more    bool // another step right away may find more
	changed bool // next differs from the cursor given
	rebased bool // the database was replaced and the cursor re-baselined
	rows    int  // rows looked at
	skipped bool // nothing to read: no commit since the last step, and no window due
	// committed: another connection committed since the last complete step,
	// or the step could not tell (forced, first, cursor not adopted, reopened).
	committed bool
	// windowDue, when set, is when (on scanConfig.now) a step must run to
	// read the window this one left owed, commits or not.
	windowDue time.Time
}

// readTx runs f in one read transaction, so every query of a step sees the
// same snapshot of the database.
func (s *scanner) readTx(ctx context.Context, f func(tx *sql.Tx, sc *schema) error) error {
	return s.r.with(ctx, func(db *sql.DB, sc *schema) error {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("chatdb: begin read: %w", err)
		}
		defer tx.Rollback()
		return f(tx, sc)
	})
}

// heads reads the AUTOINCREMENT sequence of message (never goes backwards
// while the file is the same, even when the newest rows are deleted), the
// highest ROWID and the newest date.
func heads(ctx context.Context, tx querier) (seq, maxRow, maxDate int64, err error) {
	// Two single-aggregate queries: SQLite answers each from the end of
	// the table or of the date index instead of scanning every row.
	if err = tx.QueryRowContext(ctx, `SELECT coalesce(max(ROWID), 0) FROM message`).Scan(&maxRow); err != nil {
		return 0, 0, 0, fmt.Errorf("chatdb: read heads: %w", err)
	}
	if err = tx.QueryRowContext(ctx, `SELECT coalesce(max(date), 0) FROM message`).Scan(&maxDate); err != nil {
		return 0, 0, 0, fmt.Errorf("chatdb: read heads: %w", err)
	}
	err = tx.QueryRowContext(ctx, `SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'message'), 0)`).Scan(&seq)
	if err != nil {
		seq, err = maxRow, nil // no sqlite_sequence: fall back to max(ROWID)
	}
	return max(seq, maxRow), maxRow, maxDate, nil
}

// baseline returns a cursor positioned at "now": every existing row counts
// as already reported, with its current state.
func (s *scanner) baseline(ctx context.Context) (*cursor, error) {
	var c *cursor
	err := s.readTx(ctx, func(tx *sql.Tx, sc *schema) error {
		seq, maxRow, maxDate, err := heads(ctx, tx)
		if err != nil {
			return err
		}
		states, err := s.windowStates(ctx, tx, sc, maxRow)
		if err != nil {
			return err
		}
		c = &cursor{V: cursorVersion, DB: sc.dbID, Seq: seq, MaxRowID: maxRow, LastDate: maxDate, states: states}
		return nil
	})
	return c, err
}

// rebase re-baselines after the database was replaced wholesale. ROWIDs in
// the new file mean nothing to the old cursor, so rows are not re-emitted;
// only rows dated after the newest row seen before (LastDate) are news and
// will be emitted by the following steps. The Tailer also drops keys it
// emitted recently, so a message present in both files is not reported
// twice.
func (s *scanner) rebase(ctx context.Context, tx querier, sc *schema, old *cursor) (*cursor, error) {
	seq, maxRow, maxDate, err := heads(ctx, tx)
	if err != nil {
		return nil, err
	}
	states, err := s.windowStates(ctx, tx, sc, maxRow)
	if err != nil {
		return nil, err
	}
	c := &cursor{V: cursorVersion, DB: sc.dbID, Seq: seq, MaxRowID: maxRow, LastDate: max(old.LastDate, maxDate), states: states}
	var first sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT min(ROWID) FROM message WHERE date > ?`, old.LastDate).Scan(&first); err != nil {
		return nil, fmt.Errorf("chatdb: rebase: %w", err)
	}
	if first.Valid {
		c.MaxRowID = first.Int64 - 1
		c.SkipUntil, c.SkipDate = maxRow, old.LastDate
		c.LastDate = old.LastDate
	}
	return c, nil
}

// pendingCount counts a window row's attachments whose file is not whole
// yet; only rows flagged as having attachments pay for the subquery.
func pendingCount(sc *schema) string {
	if !sc.has("attachment", "transfer_state") || len(sc.cols["message_attachment_join"]) == 0 {
		return "0"
	}
	return `CASE WHEN coalesce(` + sc.col("message", "m", "cache_has_attachments", "1") + `, 0) != 0 THEN
		(SELECT count(*) FROM message_attachment_join j JOIN attachment a ON a.ROWID = j.attachment_id
		 WHERE j.message_id = m.ROWID AND coalesce(a.transfer_state, 0) != ` + fmt.Sprint(transferFinished) + `) ELSE 0 END`
}

// windowStates is the full current state of the window's rows (for a
// baseline): fingerprints plus the unsent parts of rows with a summary and
// the pending attachments of rows with transfers under way.
func (s *scanner) windowStates(ctx context.Context, tx querier, sc *schema, upTo int64) (map[int64]state, error) {
	win, err := s.window(ctx, tx, sc, upTo)
	if err != nil {
		return nil, err
	}
	states := map[int64]state{}
	var withSummary []int64
	for _, w := range win {
		if w.fp != (state{}) {
			states[w.rowid] = w.fp
		}
		if w.fp.SumLen > 0 || w.pending > 0 {
			withSummary = append(withSummary, w.rowid)
		}
	}
	for len(withSummary) > 0 {
		chunk := withSummary[:min(len(withSummary), 500)]
		withSummary = withSummary[len(chunk):]
		rows, err := queryRows(ctx, tx, sc, "WHERE m.ROWID IN ("+placeholders(len(chunk))+")", int64Args(chunk)...)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			d := s.conv.decode(r)
			if d.state != (state{}) {
				states[r.RowID] = d.state
			}
		}
	}
	return states, nil
}

// isHistorical applies the history policy: a row is history when its date
// is older than historicalAge before the earlier of now and the newest date
// seen so far. Relative to now alone, messages that arrived while the agent
// was stopped for hours would count as history; relative to the newest row
// seen, they do not, while iCloud rows from last month still do.
func (s *scanner) isHistorical(c *cursor, date int64) bool {
	ref := s.cfg.clock()
	if c.LastDate != 0 {
		if last := FromAppleTime(c.LastDate); last.Before(ref) {
			ref = last
		}
	}
	return FromAppleTime(date).Before(ref.Add(-s.cfg.historicalAge))
}

// step computes one bounded batch of events after cur. It never changes
// cur; the caller adopts next only once the events are stored.
//
// Unless force is set, a step first reads PRAGMA data_version inside its
// read transaction (on the Reader's fixed connection, so the value belongs
// to the very snapshot the step reads) and compares it with what the last
// complete step saw; cur must be the cursor that step left. Then:
//
//   - the same value, no window owed: nothing was committed since, so every
//     query would return what it returned then; the step returns skipped;
//   - another value within windowEvery of the last window read: the new
//     rows are read (cheap, by ROWID) and the window is left owed, due at
//     windowDue (a burst of commits costs one window read);
//   - otherwise (another value or a window due; a reopened connection, a
//     replaced chat.db, a cursor the caller did not adopt, a step that left
//     more to do, force): everything is read.
func (s *scanner) step(ctx context.Context, cur *cursor, force bool) (*stepResult, error) {
	replaced, err := s.r.Refresh(ctx)
	if err != nil {
		s.last = lastStep{}
		return nil, err
	}
	res := &stepResult{next: cur}
	var seen dataVersion
	var withWindow bool
	now := s.cfg.now()
	err = s.r.snapshot(ctx, func(tx querier, sc *schema, v dataVersion) error {
		*res, seen = stepResult{next: cur}, v // f runs again after a reopen
		known := !force && !replaced && s.last.ok && s.last.cur == cur
		committed := !known || s.last.v != v
		withWindow = committed || s.owed
		if withWindow && known && now.Sub(s.windowAt) < s.cfg.windowEvery {
			withWindow = false
			res.windowDue = s.windowAt.Add(s.cfg.windowEvery)
		}
		res.committed = committed
		if !committed && !withWindow {
			res.skipped = true
			return nil
		}
		next := cur.clone()
		res.next = next
		seq, _, _, err := heads(ctx, tx)
		if err != nil {
			return err
		}
		if replaced || (cur.DB != "" && cur.DB != sc.dbID) || seq < cur.Seq {
			rebased, err := s.rebase(ctx, tx, sc, cur)
			if err != nil {
				return err
			}
			res.next, res.rebased, res.changed, res.more = rebased, true, true, true
			return nil
		}
		if next.DB == "" {
			next.DB, res.changed = sc.dbID, true
		}

		// Updates in place, among the recent rows.
		var changed []int64
		if withWindow {
			win, err := s.window(ctx, tx, sc, cur.MaxRowID)
			if err != nil {
				return err
			}
			keep := make(map[int64]bool, len(win))
			for _, w := range win {
				keep[w.rowid] = true
				if w.changedSince(cur.states[w.rowid]) {
					if len(changed) == s.cfg.batch {
						res.more = true
						continue
					}
					changed = append(changed, w.rowid)
				}
			}
			for id := range next.states {
				if !keep[id] {
					delete(next.states, id) // aged out of the window
					res.changed = true
				}
			}
		}
		if len(changed) > 0 {
			rows, err := queryRows(ctx, tx, sc, "WHERE m.ROWID IN ("+placeholders(len(changed))+") ORDER BY m.ROWID", int64Args(changed)...)
			if err != nil {
				return err
			}
			for _, r := range rows {
				d := s.conv.decode(r)
				prev := cur.states[r.RowID]
				hist := s.isHistorical(cur, r.Date)
				if !(hist && s.cfg.skipHistorical) {
					res.events = append(res.events, s.conv.events(d, prev, false, hist)...)
				}
				next.setState(r.RowID, d.state)
			}
			res.rows += len(rows)
			res.changed = true
		}

		// New rows.
		budget := s.cfg.batch - len(changed)
		if budget <= 0 {
			res.more = true
			return nil
		}
		rows, err := queryRows(ctx, tx, sc, "WHERE m.ROWID > ? ORDER BY m.ROWID LIMIT ?", cur.MaxRowID, budget)
		if err != nil {
			return err
		}
		cutoff := s.windowCutoff(s.cfg.clock())
		for _, r := range rows {
			next.MaxRowID = r.RowID
			res.changed = true
			if r.RowID <= next.SkipUntil && r.Date <= next.SkipDate {
				continue // old content in a replaced database
			}
			d := s.conv.decode(r)
			hist := s.isHistorical(next, r.Date)
			if !(hist && s.cfg.skipHistorical) {
				res.events = append(res.events, s.conv.events(d, state{}, true, hist)...)
			}
			if !hist && r.Date > next.LastDate {
				next.LastDate = r.Date
			}
			if r.Date >= cutoff {
				next.setState(r.RowID, d.state)
			}
		}
		if next.SkipUntil != 0 && next.MaxRowID >= next.SkipUntil {
			next.SkipUntil, next.SkipDate = 0, 0
		}
		if seq > next.Seq {
			next.Seq, res.changed = seq, true
		}
		res.rows += len(rows)
		res.more = res.more || len(rows) == budget
		return nil
	})
	if err != nil {
		s.last = lastStep{}
		return nil, err
	}
	s.last = lastStep{ok: !res.more, v: seen, cur: cur}
	if res.changed {
		s.last.cur = res.next
	}
	switch {
	case res.skipped:
	case withWindow && !res.rebased:
		// Read, and (more or not) compared: a step that left changed rows
		// for later has more set, and the next step reads everything.
		s.owed, s.windowAt = false, now
	default:
		s.owed = true
	}
	return res, nil
}

func placeholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?,", n-1) + "?"
}

func int64Args(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}
