package agent

// What the journal keeps for reconciliation after a crash
// (docs/reliability.md): when each running command started, what its
// driver noted before the step that may reach Messages, and which message
// GUIDs recorded results already own.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/confirm"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// stateReconciling is a command an earlier process left running that the
// agent is still checking against chat.db: not run again, answered
// IN_PROGRESS, until it is found, certainly absent, or in doubt.
const stateReconciling = "reconciling"

// attemptsSchema keeps each running command's messages.Attempt. Its own
// table, created where it is used, so older state.db files need no
// migration; rows of finished commands are pruned with every note.
const attemptsSchema = `CREATE TABLE IF NOT EXISTS attempts (id TEXT PRIMARY KEY, attempt BLOB NOT NULL)`

// NoteAttempt records what the driver noted about a running command
// (messages.NoteAttempt), durably before it returns: the driver lets the
// step run only after a nil error.
func (j *Journal) NoteAttempt(id string, a messages.Attempt) error {
	blob, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	err = j.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(attemptsSchema); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM attempts WHERE id NOT IN (SELECT id FROM commands WHERE state IN (?, ?))`, stateRunning, stateReconciling); err != nil {
			return err
		}
		res, err := tx.Exec(`INSERT INTO attempts(id, attempt) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM commands WHERE id = ?1 AND state = ?3)
			ON CONFLICT(id) DO UPDATE SET attempt = excluded.attempt`, id, blob, stateRunning)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("no running record")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: note attempt of %q: %w", id, err)
	}
	return nil
}

// unfinished is a command an earlier process left running (without a
// checkpoint: those are resumed) or reconciling.
type unfinished struct {
	cmd *linev1.Command
	// started is when it was marked running and chat.db's newest row then:
	// a running command's updated_at is written when it starts and not
	// again until it finishes (only SaveCheckpoint does, and checkpointed
	// commands are not listed).
	started confirm.Start
	// order is its place in the journal (the commands table's rowid),
	// which, unlike its times, a clock set back cannot reorder.
	order   int64
	attempt messages.Attempt
}

// unfinishedCommands lists the commands to reconcile. A record whose
// command cannot be read is settled IN_DOUBT at once: nothing can be
// looked for.
func (j *Journal) unfinishedCommands(ctx context.Context) ([]unfinished, error) {
	// Through the one writer, as every write of state.db.
	if err := j.write(func(tx *sql.Tx) error { _, err := tx.Exec(attemptsSchema); return err }); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	rows, err := j.db.QueryContext(ctx, `SELECT c.id, c.command, c.updated_at, c.chatdb_mark, c.rowid, a.attempt FROM commands c LEFT JOIN attempts a ON a.id = c.id
		WHERE (c.state = ? AND c.checkpoint IS NULL) OR c.state = ? ORDER BY c.rowid`, stateRunning, stateReconciling)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	type raw struct {
		id            string
		cmd, attempt  []byte
		updatedAtNano int64
		mark          sql.NullInt64
		order         int64
	}
	var all []raw
	for rows.Next() {
		var r raw
		if err := rows.Scan(&r.id, &r.cmd, &r.updatedAtNano, &r.mark, &r.order, &r.attempt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("journal: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var out []unfinished
	for _, r := range all {
		u := unfinished{cmd: &linev1.Command{}, started: confirm.Start{At: time.Unix(0, r.updatedAtNano), Mark: r.mark.Int64, Marked: r.mark.Valid}, order: r.order}
		err := proto.Unmarshal(r.cmd, u.cmd)
		if err == nil && r.cmd == nil {
			err = fmt.Errorf("no command kept")
		}
		if err == nil && r.attempt != nil {
			err = json.Unmarshal(r.attempt, &u.attempt)
		}
		if err != nil {
			res := inDoubt(r.id, j.now(), fmt.Sprintf("its record cannot be read (%v)", err))
			if err := j.Settle(ctx, res); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, u)
	}
	return out, nil
}

// markReconciling keeps a running command out of SettleInterrupted (and
// of every redelivery) while it is checked in the background; its
// updated_at, its start, stays.
func (j *Journal) markReconciling(id string) error {
	if err := j.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE commands SET state = ? WHERE id = ? AND state = ?`, stateReconciling, id, stateRunning)
		return err
	}); err != nil {
		return fmt.Errorf("journal: mark %q reconciling: %w", id, err)
	}
	return nil
}

// claimedLookback is how many commands recorded before the oldest
// interrupted one claimedFrom reads: one that ran beside it may have
// finished after it, and commands wait at most MaxQueued behind others.
const claimedLookback = 10000

// claimedFrom returns the message GUIDs of the results recorded for
// commands from the journal place order on (less claimedLookback), or
// finished since t: rows other commands own, which an interrupted
// command's must not be taken for (two identical texts to one chat, the
// first finished). Both bounds, because a clock set back makes a later
// result look older.
func (j *Journal) claimedFrom(ctx context.Context, order int64, t time.Time) (map[string]bool, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT result FROM commands WHERE state = ? AND result IS NOT NULL AND (rowid >= ? OR updated_at >= ?)`,
		stateDone, order-claimedLookback, t.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var blob []byte
		if err := rows.Scan(&blob); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		res := &linev1.CommandResult{}
		if proto.Unmarshal(blob, res) == nil {
			if g := res.GetSnapshot().GetMessageGuid(); g != "" {
				out[g] = true
			}
		}
	}
	return out, rows.Err()
}
