package relay

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Finished commands are kept Options.CommandRetention after their
// deadline and then pruned by the sweeper, so the commands table does not
// grow for as long as the relay runs. Reads have a shorter retention of
// their own (api_reads.go).

// pruneCommands deletes the finished commands that Options.CommandRetention
// has passed, one bounded batch per call; the sweeper calls it in its
// retention pass.
func (s *Server) pruneCommands() {
	n, err := s.store.pruneCommands(s.ctx, s.now().Add(-s.opts.CommandRetention), pruneCommandsBatch)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Error("prune commands", "err", err)
		}
		return
	}
	if n > 0 {
		s.log.Info("finished commands pruned", "deleted", n)
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
