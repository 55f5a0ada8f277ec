package agent

import (
	"database/sql"
	"time"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// CommandObserver hears what the dispatcher decided, for metrics
// (metrics.go; *Metrics is one). It is called on the dispatcher's
// goroutines, outside its lock, and must not block.
type CommandObserver interface {
	// CommandFinished: a command the dispatcher was given (Submit or
	// Resume) has its final result, heard once per submission: a
	// redelivery answered from memory or the journal is not heard again.
	// result is "ok" or the error's code name; took runs from the
	// submission to the result.
	CommandFinished(kind, result string, took time.Duration)
	// CommandSettled: a command an earlier process left running was
	// settled from chat.db after the restart (never run again).
	CommandSettled(result string)
}

// submission is a command waiting for its first result, for the observer.
type submission struct {
	kind string
	// at is when the dispatcher took it, on the monotonic clock: a
	// duration must not jump with the wall clock.
	at time.Time
}

// noteSubmit remembers that cmd awaits its first result. Called only on
// the paths that lead to a new result (or to runChat's end, which forgets
// the note), so the map is bounded by the commands in flight.
func (d *Dispatcher) noteSubmit(cmd *linev1.Command) {
	if d.observer == nil {
		return
	}
	d.mu.Lock()
	d.submitted[cmd.GetId()] = submission{kind: command.KindName(cmd), at: time.Now()}
	d.mu.Unlock()
}

// observe tells the observer about res if it is the first result of a
// noted submission; a replayed answer finds no note and is not heard.
func (d *Dispatcher) observe(res *linev1.CommandResult) {
	if d.observer == nil {
		return
	}
	d.mu.Lock()
	sub, ok := d.submitted[res.GetCommandId()]
	delete(d.submitted, res.GetCommandId())
	d.mu.Unlock()
	if ok {
		d.observer.CommandFinished(sub.kind, resultName(res), time.Since(sub.at))
	}
}

// observeSettled tells the observer about a result the reconciler decided
// for a command an earlier process left running.
func (d *Dispatcher) observeSettled(res *linev1.CommandResult) {
	if d.observer != nil {
		d.observer.CommandSettled(resultName(res))
	}
}

// journalObserver hears what the journal does that metrics count;
// *Metrics is one.
type journalObserver interface {
	// eventAcked: an event the relay acknowledged waited lag since its
	// commit to the outbox.
	eventAcked(lag time.Duration)
	// CommandSettled: a command an earlier process left running was
	// settled at start-up.
	CommandSettled(result string)
	// commandsPruned: n finished command records older than the
	// journal's retention were deleted.
	commandsPruned(n int)
}

// deleteAckedReturning is the ack's delete, returning when each deleted
// event was committed (unix ns), for the inbound lag.
func deleteAckedReturning(tx *sql.Tx, seq uint64) ([]int64, error) {
	rows, err := tx.Query(`DELETE FROM outbox WHERE seq <= ? RETURNING created_at`, seq)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var stored []int64
	for rows.Next() {
		var at int64
		if err := rows.Scan(&at); err != nil {
			return nil, err
		}
		stored = append(stored, at)
	}
	return stored, rows.Err()
}
