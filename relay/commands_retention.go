package relay

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"
)

// Finished commands are kept Options.CommandRetention after their
// deadline and then pruned by the sweeper, so the commands table does not
// grow for as long as the relay runs. Reads have a shorter retention of
// their own (api_reads.go); events and uploads theirs (api_events.go,
// api_attachments_store.go). The sweeper runs retain at most once a
// second (runSweeper).

// retain is the sweeper's retention pass: each kind of row that outlived
// its retention is deleted, a bounded batch per pass, with one rule for
// failures (logged, the next pass tries again) and for what went.
func (s *Server) retain() {
	now := s.now()
	for _, p := range []struct {
		what  string
		level slog.Level
		run   func() (int, error)
	}{
		{"events", slog.LevelInfo, func() (int, error) {
			return s.store.pruneEvents(s.ctx, now.Add(-s.opts.EventRetention), pruneBatch)
		}},
		{"expired uploads", slog.LevelInfo, func() (int, error) { return s.store.pruneUploads(s.ctx, now, uploadPruneBatch) }},
		{"finished reads", slog.LevelDebug, func() (int, error) {
			return s.store.pruneReads(s.ctx, now.Add(-readRetention), pruneReadsBatch)
		}},
		{"finished commands", slog.LevelInfo, func() (int, error) {
			return s.store.pruneCommands(s.ctx, now.Add(-s.opts.CommandRetention), pruneCommandsBatch)
		}},
	} {
		n, err := p.run()
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			s.log.Error("prune "+p.what, "err", err)
		case err == nil && n > 0:
			s.log.Log(s.ctx, p.level, p.what+" pruned", "deleted", n)
		}
	}
}

// pruneCommandsBatch bounds the commands one prune deletes.
const pruneCommandsBatch = 1000

// pruneCommands deletes up to limit final commands whose deadline is
// before cutoff, and only writes when one is due. By the deadline rather
// than the finish: the deadline is indexed with the state (so this reads
// only what it deletes), and a command is final by its deadline plus the
// result grace, so each one deleted finished at least the retention less
// that grace ago.
func (st *store) pruneCommands(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	due, args := commandsDue(cutoff)
	return st.deleteCommands(ctx, due, args, limit)
}

// deleteCommands deletes up to limit commands matching due (a condition on
// the commands table, with its arguments). It looks with a read first and
// writes only when one matches: the sweeper's retention passes run every
// second and almost always find nothing.
func (st *store) deleteCommands(ctx context.Context, due string, args []any, limit int) (int, error) {
	var one int
	err := st.db.QueryRowContext(ctx, `SELECT 1 FROM commands WHERE `+due+` LIMIT 1`, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := st.exec(ctx, `DELETE FROM commands WHERE id IN (SELECT id FROM commands WHERE `+due+` LIMIT ?)`, append(args, limit)...)
	return int(n), err
}

// commandsDue is pruneCommands' condition and its arguments.
func commandsDue(cutoff time.Time) (string, []any) {
	return `state IN (?, ?) AND deadline < ?`, []any{stateSucceeded, stateFailed, cutoff.UnixNano()}
}
