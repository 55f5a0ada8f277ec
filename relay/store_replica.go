package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// What the store does for several replicas on one PostgreSQL database
// (docs/scaling.md): it announces what a transaction commits to the other
// replicas, fences the writes of a stream that lost its agent, and keeps
// each replica's sign of life. On SQLite (one process) the announcements
// are nothing and the fence is a cheap read that always passes for the
// agent's current stream.

// wakeChannel is the PostgreSQL notification channel every replica
// LISTENs on.
const wakeChannel = "line_relay"

// What an announcement says (its kind), each with its argument: the
// replicas turn them into the same wake-ups a commit of their own gives
// (replica_listen.go).
const (
	// wakeCommand: a command was queued for the line key.
	wakeCommand = "cmd"
	// wakeEvents: events were stored (no argument: the feed reads by
	// cursor).
	wakeEvents = "evt"
	// wakeDone: the command id reached its final state.
	wakeDone = "done"
	// wakeFreed: the agent id has fewer commands in flight (the sweeper
	// failed one): its stream may claim more.
	wakeFreed = "free"
	// wakeStream: "<agent id> <epoch>": the agent has a new stream of
	// that epoch; any older one must end.
	wakeStream = "stream"
)

// errFenced is the outcome of a write of a stream whose agent has a newer
// stream (a higher stream epoch), on this replica or another: the write is
// dropped and the stream ends. Nothing is lost by it: the agent's journal
// answers the dropped results again when the newer stream redelivers the
// commands, and the events it resends from Welcome's stored sequence.
var errFenced = errors.New("relay: the agent has a newer stream; this one's writes no longer count")

// announce tells the other replicas what tx commits: a PostgreSQL NOTIFY
// on wakeChannel, delivered if and when tx commits (a job rolled back to
// its savepoint takes its announcements with it), and once per distinct
// text per transaction. Nothing on SQLite.
func (st *store) announce(ctx context.Context, tx *sql.Tx, kind, arg string) error {
	if st.d.notify == "" {
		return nil
	}
	if _, err := st.txExec(ctx, tx, st.d.notify, wakeChannel, st.origin+" "+kind+" "+arg); err != nil {
		return fmt.Errorf("announce %s: %w", kind, err)
	}
	return nil
}

// fenced makes fn count only for the stream of epoch: it first reads the
// agent's stream epoch (on PostgreSQL locking the row against a Hello
// until the write commits) and fails with errFenced, writing nothing,
// when a newer stream has the agent.
func (st *store) fenced(ctx context.Context, agentID string, epoch int64, fn func(*sql.Tx) error) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		var current int64
		if err := st.txQueryRow(ctx, tx, st.d.streamEpoch, agentID).Scan(&current); err != nil {
			return fmt.Errorf("read the stream epoch: %w", err)
		}
		if current != epoch {
			return errFenced
		}
		return fn(tx)
	}
}

// streamRecord is where an agent's newest stream is, as the store knows
// it: the replica holding it, whether that replica counted it healthy,
// whether it ended, and when that replica was last alive.
type streamRecord struct {
	replica      string
	healthy      bool
	disconnected bool
	replicaSeen  time.Time
}

// streamRecordCols reads a streamRecord (but disconnected, which is
// disconnected_at) from an agents row.
const streamRecordCols = `stream_replica, stream_healthy,
		COALESCE((SELECT seen_at FROM relay_replicas r WHERE r.id = agents.stream_replica), 0)`

// agentStream is the agent's streamRecord; ok is false for an unknown
// agent.
func (st *store) agentStream(ctx context.Context, agentID string) (rec streamRecord, ok bool, err error) {
	var disc, seen int64
	err = st.db.QueryRowContext(ctx, `SELECT `+streamRecordCols+`, disconnected_at FROM agents WHERE id = ?`, agentID).
		Scan(&rec.replica, &rec.healthy, &seen, &disc)
	if errors.Is(err, sql.ErrNoRows) {
		return streamRecord{}, false, nil
	}
	if err != nil {
		return streamRecord{}, false, err
	}
	rec.disconnected, rec.replicaSeen = disc > 0, time.Unix(0, seen)
	return rec, true, nil
}

// replicaAlive records that replica is alive at now (it started at
// started) and forgets the replicas not seen since forgetBefore.
func (st *store) replicaAlive(ctx context.Context, replica string, started, now, forgetBefore time.Time) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO relay_replicas(id, started_at, seen_at) VALUES(?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET seen_at = excluded.seen_at`, replica, started.UnixNano(), now.UnixNano()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM relay_replicas WHERE seen_at < ?`, forgetBefore.UnixNano())
		return err
	})
}

// queuedMarks returns, for each of lineKeys with queued commands, the
// newest queued command's insertion number (PostgreSQL's commands.rowid,
// which only grows): a line whose mark moved has a command its replica
// may not have been told of. PostgreSQL only.
func (st *store) queuedMarks(ctx context.Context, lineKeys []string) (map[string]int64, error) {
	out := map[string]int64{}
	if len(lineKeys) == 0 {
		return out, nil
	}
	rows, err := st.db.QueryContext(ctx, `SELECT line_key, MAX(rowid) FROM commands
		WHERE state = ? AND line_key IN `+pgInList+` GROUP BY line_key`, stateQueued, jsonList(lineKeys))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var mark int64
		if err := rows.Scan(&k, &mark); err != nil {
			return nil, err
		}
		out[k] = mark
	}
	return out, rows.Err()
}

// finishedAmong returns those of ids whose command is final.
// PostgreSQL only, as the other reads of the replica poll (replica.go).
func (st *store) finishedAmong(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := st.db.QueryContext(ctx, `SELECT id FROM commands WHERE id IN `+pgInList+` AND state IN (?, ?)`,
		jsonList(ids), stateSucceeded, stateFailed)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanOne[string])
}

// streamEpochs returns the stream epoch of each of agentIDs. PostgreSQL
// only.
func (st *store) streamEpochs(ctx context.Context, agentIDs []string) (map[string]int64, error) {
	out := map[string]int64{}
	if len(agentIDs) == 0 {
		return out, nil
	}
	rows, err := st.db.QueryContext(ctx, `SELECT id, stream_epoch FROM agents WHERE id IN `+pgInList, jsonList(agentIDs))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var epoch int64
		if err := rows.Scan(&id, &epoch); err != nil {
			return nil, err
		}
		out[id] = epoch
	}
	return out, rows.Err()
}
