package chatdb

import (
	"context"
	"fmt"
	"strings"
)

// legacyWindow is the update-window read as it was before window.go: one
// query through the date index returning twelve columns per row, scanned
// row by row. It is kept, in a test file, as the baseline that
// BenchmarkScanStep measures the new read against, and as the reference
// TestWindowReadsWhatTheRowByRowReadDid compares it with.
func legacyWindow(ctx context.Context, tx querier, sc *schema, cutoff, upTo int64, limit int) ([]windowRow, error) {
	rs, err := tx.QueryContext(ctx, legacyWindowQuery(sc), cutoff, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("chatdb: window: %w", err)
	}
	defer rs.Close()
	var out []windowRow
	for rs.Next() {
		var id, item, assoc, errCode, edited, retracted, sumLen, pending int64
		var fromMe, sent, delivered, read bool
		if err := rs.Scan(&id, &item, &assoc, &fromMe, &sent, &delivered, &read, &errCode, &edited, &retracted, &sumLen, &pending); err != nil {
			return nil, fmt.Errorf("chatdb: window: %w", err)
		}
		kind := classify(item, assoc)
		if kind != kindMessage {
			pending = 0
		}
		out = append(out, windowRow{rowid: id, fp: fingerprint(kind, fromMe, sent, delivered, read, errCode, edited, retracted, sumLen), pending: pending})
	}
	return out, rs.Err()
}

func legacyWindowQuery(sc *schema) string {
	m := func(col, fallback string) string {
		return "coalesce(" + sc.col("message", "m", col, fallback) + ", " + fallback + ")"
	}
	sumLen := "0"
	if sc.has("message", "message_summary_info") {
		sumLen = "coalesce(length(m.message_summary_info), 0)"
	}
	return `SELECT m.ROWID, ` + strings.Join([]string{
		m("item_type", "0"), m("associated_message_type", "0"), m("is_from_me", "0"), m("is_sent", "0"),
		m("is_delivered", "0"), m("is_read", "0"), m("error", "0"), m("date_edited", "0"), m("date_retracted", "0"), sumLen,
		pendingCount(sc),
	}, ", ") + ` FROM message m WHERE m.date >= ? AND m.ROWID <= ? ORDER BY m.date DESC LIMIT ?`
}

// useLegacyWindow makes s read the window the old way.
func useLegacyWindow(s *scanner) {
	s.windowFn = func(ctx context.Context, tx querier, sc *schema, upTo int64) ([]windowRow, error) {
		return legacyWindow(ctx, tx, sc, s.windowCutoff(s.cfg.clock()), upTo, s.cfg.windowRows)
	}
}
