package agent

import (
	"database/sql"
	"time"
)

// Pruning of finished command records. A record answers a redelivered id
// from the journal (at most once) and refuses an id reused for another
// command; both matter only while the relay may still send that id. The
// relay never redelivers a finished command nor one whose deadline has
// passed (its sweeper fails it), and it refuses a reused id itself while
// it keeps the command (its --command-retention, 30 days after the
// deadline by default). Kept for ever, the records make state.db grow by
// every command the Mac has run. SQLite reuses the freed pages; the file
// does not shrink.

// DefaultJournalRetention is how long a finished command's record is kept
// after both its deadline and its finish: the relay's default command
// retention, so the agent's own refusal of a reused id lasts as long as
// the relay's.
const DefaultJournalRetention = 720 * time.Hour

// MinJournalRetention is the shortest retention accepted: a clock that is
// off by less than this between relay and Mac cannot make a record
// vanish while its command may still be redelivered.
const MinJournalRetention = time.Hour

const (
	// pruneEvery spaces the prune turns of a journal with nothing left to
	// prune; one that found a full batch goes again at the next finish.
	pruneEvery = time.Hour
	// pruneBatch bounds the rows one turn looks at, so a first prune of
	// a large old journal never holds the writer for long.
	pruneBatch = 1000
)

// SetRetention sets how long a finished command's record is kept
// (DefaultJournalRetention unless set). Call it before the journal is
// used.
func (j *Journal) SetRetention(d time.Duration) { j.retention = d }

// maybePrune queues a prune turn when one is due; called whenever a
// command finishes, so an agent that runs nothing does no work (and has
// nothing new to prune).
func (j *Journal) maybePrune() {
	now := j.now()
	j.mu.Lock()
	if j.retention <= 0 || j.pruning || now.Before(j.pruneNext) {
		j.mu.Unlock()
		return
	}
	j.pruning = true
	from := j.pruneFrom
	j.mu.Unlock()

	cut := now.Add(-j.retention).UnixNano()
	var t pruneTurn
	j.writeAsync(func(tx *sql.Tx) error {
		var err error
		t, err = pruneCommands(tx, from, cut, j.pruneKeep)
		return err
	}, func(err error) {
		j.mu.Lock()
		j.pruning = false
		switch {
		case err != nil:
			j.pruneNext = now.Add(pruneEvery)
		case t.more:
			j.pruneFrom, j.pruneNext = t.last, time.Time{}
		default:
			j.pruneFrom, j.pruneNext = 0, now.Add(pruneEvery)
		}
		j.mu.Unlock()
		if err == nil && t.deleted > 0 && j.obs != nil {
			j.obs.commandsPruned(t.deleted)
		}
	})
}

// pruneTurn is what one prune turn did.
type pruneTurn struct {
	deleted int
	// more: the turn stopped at its batch bound, with rows after last
	// still to look at.
	more bool
	last int64
}

// pruneCommands deletes, among the pruneBatch oldest records after
// rowid from, the finished ones whose finish and deadline are both
// before cut (unix ns). Records are looked at in the order they were
// received, so the first one received after cut ends the turn: every
// later one is younger. Never touched: an unfinished command, and the
// keep records before the oldest unfinished one (or before the newest
// record), which claimedFrom reads.
func pruneCommands(tx *sql.Tx, from, cut, keep int64) (pruneTurn, error) {
	var bound int64
	err := tx.QueryRow(`SELECT coalesce(
		(SELECT min(rowid) FROM commands WHERE state IN (?, ?, ?)),
		(SELECT coalesce(max(rowid), 0) + 1 FROM commands)) - ?`,
		stateAccepted, stateRunning, stateReconciling, keep).Scan(&bound)
	if err != nil {
		return pruneTurn{}, err
	}
	rows, err := tx.Query(`SELECT rowid, state, received_at, updated_at, coalesce(deadline, 0) FROM commands
		WHERE rowid > ? AND rowid < ? ORDER BY rowid LIMIT ?`, from, bound, pruneBatch)
	if err != nil {
		return pruneTurn{}, err
	}
	var (
		t     pruneTurn
		doom  []int64
		seen  int
		young bool
	)
	for rows.Next() {
		var (
			rowid                         int64
			state                         string
			received, updated, deadlineNs int64
		)
		if err := rows.Scan(&rowid, &state, &received, &updated, &deadlineNs); err != nil {
			rows.Close()
			return pruneTurn{}, err
		}
		seen++
		t.last = rowid
		if received >= cut {
			young = true
			break
		}
		if state == stateDone && updated < cut && deadlineNs < cut {
			doom = append(doom, rowid)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return pruneTurn{}, err
	}
	for _, rowid := range doom {
		if _, err := tx.Exec(`DELETE FROM commands WHERE rowid = ?`, rowid); err != nil {
			return pruneTurn{}, err
		}
	}
	t.deleted = len(doom)
	t.more = !young && seen == pruneBatch
	return t, nil
}
