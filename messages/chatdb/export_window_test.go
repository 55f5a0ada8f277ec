package chatdb

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"time"
)

// WindowRow is one row of the update window, as the tests compare them.
type WindowRow = windowRow

// HasState reports whether the row has a state other than the zero one.
func (w windowRow) HasState() bool { return w.fp != (state{}) }

// Pending is how many of the row's files are still transferring.
func (w windowRow) Pending() int64 { return w.pending }

// WindowReads is the window of a chat.db read both ways in one snapshot.
type WindowReads struct {
	New, Legacy []WindowRow // sorted by ROWID
	ByRange     bool        // the new read took the ROWID range scan
	Full        bool        // the window holds windowRows rows
	// Boundary is the date of the window's last row (in window order) when
	// it is full.
	Boundary int64
}

// ReadWindowBothWays reads the window of the chat.db at path as it stands
// at now, with window.go's two passes and with the row-by-row read they
// replaced (legacyWindow), in one read transaction.
func ReadWindowBothWays(ctx context.Context, path string, now time.Time, windowRows int) (WindowReads, error) {
	r, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return WindowReads{}, err
	}
	defer r.Close()
	clock := func() time.Time { return now }
	s := &scanner{r: r, cfg: scanConfig{windowAge: 48 * time.Hour, windowRows: windowRows, clock: clock, now: time.Now}}
	var out WindowReads
	err = r.snapshot(ctx, func(tx querier, sc *schema, _ dataVersion) error {
		var maxRow int64
		if err := tx.QueryRowContext(ctx, `SELECT max(ROWID) FROM message`).Scan(&maxRow); err != nil {
			return err
		}
		cutoff := s.windowCutoff(now)
		b, err := s.windowBounds(ctx, tx, cutoff, maxRow)
		if err != nil {
			return err
		}
		out.ByRange, out.Full = b.byRange(), b.n == windowRows
		if out.Full {
			out.Boundary = b.date
		}
		if out.New, err = s.window(ctx, tx, sc, maxRow); err != nil {
			return err
		}
		out.Legacy, err = legacyWindow(ctx, tx, sc, cutoff, maxRow, windowRows)
		return err
	})
	byID := func(a, b windowRow) int { return int(a.rowid - b.rowid) }
	slices.SortFunc(out.New, byID)
	slices.SortFunc(out.Legacy, byID)
	return out, err
}
