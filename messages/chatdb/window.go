package chatdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"
)

// The update window is the set of recent rows whose in-place updates are
// tracked: rows dated at or after the cutoff (now minus windowAge) with a
// ROWID at most the cursor's, the newest windowRows of them in the order
// (date, ROWID) descending. Reading it is most of what a step costs when
// chat.db changed, so it is read in two passes that keep SQLite and
// database/sql doing as little per row as possible:
//
//  1. bounds: an index-only walk of message_idx_date (date, ROWID) finds how
//     many rows the window holds, its lowest ROWID and, for a full window,
//     the last row in window order, which settles ties at the boundary.
//  2. image: the fingerprint columns of those rows come back as ONE text
//     value, "rowid flags error edited retracted sumlen pending;" per row
//     (group_concat of printf), which Go parses. The rows are read by a
//     ROWID range scan of the table when the window's rows are most of that
//     range (the usual case: recent rows have the highest ROWIDs), or
//     through the date index otherwise (iCloud history with new ROWIDs and
//     old dates in between). Both select exactly the same rows.
//
// Against the row-per-row read it replaced (kept as legacyWindow in a test
// file, the benchmark's baseline), the ROWID range scan saves a B-tree
// descent per row and one value instead of twelve columns per row saves most
// of the driver's per-column cost; docs/chatdb.md has the figures.

// Bits of the image's flags field.
const (
	imgMessage   = 1 << iota // item_type 0 and associated_message_type 0: a message row
	imgFromMe                // is_from_me
	imgSent                  // is_sent
	imgDelivered             // is_delivered
	imgRead                  // is_read
)

// windowBounds is where the window lies in the table.
type windowBounds struct {
	n    int   // rows in the window
	lo   int64 // the lowest ROWID among them
	upTo int64 // no row above this ROWID is in the window (the cursor's)
	// A row of ROWID lo..upTo is in the window when it is dated after date,
	// or exactly at date with a ROWID of at least tie. For a window that is
	// not full, date is the cutoff and tie is lo (so: dated at or after the
	// cutoff); for a full one they are the last row in window order.
	date, tie int64
}

// windowBounds finds the window's extent with index-only queries.
func (s *scanner) windowBounds(ctx context.Context, tx querier, cutoff, upTo int64) (windowBounds, error) {
	b := windowBounds{upTo: upTo, date: cutoff}
	var lo sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT count(*), min(id) FROM (SELECT ROWID AS id FROM message WHERE date >= ? AND ROWID <= ? ORDER BY date DESC, ROWID DESC LIMIT ?)`,
		cutoff, upTo, s.cfg.windowRows).Scan(&b.n, &lo); err != nil {
		return b, fmt.Errorf("chatdb: window bounds: %w", err)
	}
	b.lo, b.tie = lo.Int64, lo.Int64
	if b.n < s.cfg.windowRows {
		return b, nil
	}
	// Full: the boundary is the last row in window order (a second walk of
	// the index; sorting the window for it would cost more).
	if err := tx.QueryRowContext(ctx, `SELECT date, ROWID FROM message WHERE date >= ? AND ROWID <= ? ORDER BY date DESC, ROWID DESC LIMIT 1 OFFSET ?`,
		cutoff, upTo, s.cfg.windowRows-1).Scan(&b.date, &b.tie); err != nil {
		return b, fmt.Errorf("chatdb: window bounds: %w", err)
	}
	return b, nil
}

// imageRecord is the printf expression of one row's image record. Columns
// this chat.db lacks read as 0, as in rowColumns.
func imageRecord(sc *schema) string {
	m := func(col string) string { return "coalesce(" + sc.col("message", "m", col, "0") + ", 0)" }
	flag := func(col string, bit int) string {
		return fmt.Sprintf("((%s != 0) << %d)", m(col), bits.TrailingZeros(uint(bit)))
	}
	sumLen := "0"
	if sc.has("message", "message_summary_info") {
		sumLen = "coalesce(length(m.message_summary_info), 0)"
	}
	flags := "(CASE WHEN " + m("associated_message_type") + " = 0 AND " + m("item_type") + " = 0 THEN " + fmt.Sprint(imgMessage) + " ELSE 0 END | " +
		strings.Join([]string{flag("is_from_me", imgFromMe), flag("is_sent", imgSent), flag("is_delivered", imgDelivered), flag("is_read", imgRead)}, " | ") + ")"
	return `printf('%d %d %d %d %d %d %d;', m.ROWID, ` + strings.Join([]string{flags, m("error"), m("date_edited"), m("date_retracted"), sumLen, pendingCount(sc)}, ", ") + `)`
}

// imageQueries are the two ways to read the image; both take (lo, upTo,
// date, date, tie) or (cutoff, upTo, windowRows) as windowImage passes them.
type imageQueries struct {
	byRange, byDate string
}

func newImageQueries(sc *schema) imageQueries {
	rec := imageRecord(sc)
	return imageQueries{
		// +m.date: the date terms must filter, not pick the date index.
		byRange: `SELECT group_concat(` + rec + `, '') FROM message m WHERE m.ROWID BETWEEN ? AND ? AND (+m.date > ? OR (+m.date = ? AND m.ROWID >= ?))`,
		byDate:  `SELECT group_concat(r, '') FROM (SELECT ` + rec + ` AS r FROM message m WHERE m.date >= ? AND m.ROWID <= ? ORDER BY m.date DESC, m.ROWID DESC LIMIT ?)`,
	}
}

// scanPerRowLimit decides between the two reads: the range scan is taken
// while the ROWID range holds at most this many rows per window row (plus
// rangeSlack), since every row in the range is read whether it is in the
// window or not.
const (
	scanPerRowLimit = 2
	rangeSlack      = 256
)

// byRange says whether the image is read by a ROWID range scan: when the
// range lo..upTo holds few rows besides the window's.
func (b windowBounds) byRange() bool {
	return b.upTo-b.lo+1 <= int64(scanPerRowLimit*b.n+rangeSlack)
}

// window reads the fingerprints of the rows whose updates are tracked.
func (s *scanner) window(ctx context.Context, tx querier, sc *schema, upTo int64) ([]windowRow, error) {
	if s.windowFn != nil {
		return s.windowFn(ctx, tx, sc, upTo)
	}
	return s.readWindow(ctx, tx, sc, upTo)
}

// readWindow is window's two passes.
func (s *scanner) readWindow(ctx context.Context, tx querier, sc *schema, upTo int64) ([]windowRow, error) {
	cutoff := ToAppleTime(s.cfg.clock().Add(-s.cfg.windowAge))
	b, err := s.windowBounds(ctx, tx, cutoff, upTo)
	if err != nil || b.n == 0 {
		return nil, err
	}
	if s.queries.sc != sc {
		s.queries.sc, s.queries.q = sc, newImageQueries(sc)
	}
	var img sql.NullString
	if b.byRange() {
		err = tx.QueryRowContext(ctx, s.queries.q.byRange, b.lo, b.upTo, b.date, b.date, b.tie).Scan(&img)
	} else {
		err = tx.QueryRowContext(ctx, s.queries.q.byDate, cutoff, b.upTo, s.cfg.windowRows).Scan(&img)
	}
	if err != nil {
		return nil, fmt.Errorf("chatdb: window: %w", err)
	}
	rows, err := parseImage(img.String, b.n)
	if err != nil {
		return nil, err
	}
	if len(rows) != b.n {
		// Both queries ran in one snapshot: a different count is a bug in
		// this file, not a race with Messages.
		return nil, fmt.Errorf("chatdb: window: %w: %d rows read, %d in the window", ErrBadImage, len(rows), b.n)
	}
	return rows, nil
}

// ErrBadImage is returned (wrapped) when the window's image does not parse
// or does not hold the rows the window does; it means the two queries of
// window disagree, which a step must not paper over.
var ErrBadImage = errors.New("chatdb: malformed window image")

// parseImage reads the records of an image; n is a capacity hint.
func parseImage(img string, n int) ([]windowRow, error) {
	out := make([]windowRow, 0, n)
	var f [7]int64
	k := 0
	for i := 0; i < len(img); {
		if k == len(f) {
			if img[i] != ';' {
				return nil, fmt.Errorf("%w: at byte %d", ErrBadImage, i)
			}
			out = append(out, imageRow(f))
			k, i = 0, i+1
			continue
		}
		if k > 0 {
			if img[i] != ' ' {
				return nil, fmt.Errorf("%w: at byte %d", ErrBadImage, i)
			}
			i++
		}
		v, j, ok := parseInt(img, i)
		if !ok {
			return nil, fmt.Errorf("%w: at byte %d", ErrBadImage, i)
		}
		f[k], k, i = v, k+1, j
	}
	if k != 0 {
		return nil, fmt.Errorf("%w: truncated record", ErrBadImage)
	}
	return out, nil
}

// parseInt reads a decimal int64 (with an optional '-') at s[i:], returning
// it and the index after it.
func parseInt(s string, i int) (int64, int, bool) {
	neg := i < len(s) && s[i] == '-'
	if neg {
		i++
	}
	start := i
	var v uint64
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := uint64(s[i] - '0')
		if v > (1<<63-d)/10 { // past what an int64 holds (its minimum included)
			return 0, i, false
		}
		v = v*10 + d
	}
	if i == start || (!neg && v > 1<<63-1) {
		return 0, i, false
	}
	if neg {
		return int64(-v), i, true
	}
	return int64(v), i, true
}

// imageRow turns one record's fields into the row's cheap state, as
// fingerprint does from the columns.
func imageRow(f [7]int64) windowRow {
	flags := f[1]
	kind := kindOther
	if flags&imgMessage != 0 {
		kind = kindMessage
	}
	w := windowRow{rowid: f[0], fp: fingerprint(kind, flags&imgFromMe != 0, flags&imgSent != 0, flags&imgDelivered != 0, flags&imgRead != 0, f[2], f[3], f[4], f[5])}
	if kind == kindMessage {
		w.pending = f[6]
	}
	return w
}

type windowRow struct {
	rowid int64
	fp    state
	// pending is how many of the row's attachments are still transferring
	// (fp, the cheap state, leaves Pending's bitmask to a decode).
	pending int64
}

// changedSince says whether the row's update columns differ from what
// prev recorded.
func (w windowRow) changedSince(prev state) bool {
	return !w.fp.sameFingerprint(prev) || w.pending != int64(bits.OnesCount64(uint64(prev.Pending)))
}

// windowCutoff is the oldest date the window holds at now.
func (s *scanner) windowCutoff(now time.Time) int64 { return ToAppleTime(now.Add(-s.cfg.windowAge)) }
