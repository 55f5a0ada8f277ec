package relay

// The relay's store is one type on database/sql for SQLite and PostgreSQL
// alike (docs/scaling.md says why): every query is written once, with ?
// placeholders, and runs as written on both, except the few that a dialect
// below spells its own way. The PostgreSQL connection turns ? into $n when
// a statement is prepared (store_pgconn.go), so a query that reads the same
// in both needs nothing here.

// dialect is what differs between the SQL of the two databases: whole
// statements where the functions differ, and the row locks PostgreSQL
// takes where a read decides a write (SQLite has one writer and no such
// clause).
type dialect struct {
	name string
	// greatest is the larger of two values: SQLite's two-argument MAX,
	// PostgreSQL's GREATEST.
	greatest string
	// forUpdate ends a read inside a write job whose rows the job then
	// writes (or decides on), so a concurrent transaction waits for this
	// one instead of deciding on what it read before; skipLocked is the
	// same for a queue read that takes whatever rows nobody else has.
	forUpdate, skipLocked string
	// The hot statements that differ (store_prepared.go). claim moves
	// the queued commands a stream may take to dispatched and returns them
	// (claimedCols): one statement, its room (the in-flight bound less
	// what the agent has in flight) counted in it.
	claim, eventSeq, insertEvent string
	// streamEpoch reads an agent's stream epoch inside a write that counts
	// only for that epoch (store.fenced); on PostgreSQL it locks the row
	// against a Hello of another replica until the write commits.
	streamEpoch string
	// notify, when set, announces a commit to the other replicas
	// (store.announce): PostgreSQL's pg_notify, delivered if and when the
	// transaction commits. SQLite has one process and no replicas.
	notify string
	// eventsLock, when set, runs before a write job inserts events: it
	// makes the transactions that store events take turns, so relay_seq
	// values become visible in the order they were given and a reader
	// that has seen one never misses a lower one committed after.
	eventsLock string
	// eventHead reads the highest relay_seq ever given to an event.
	eventHead string
	// agentLines is listAgents' sorted JSON array of an agent's bound
	// lines.
	agentLines string
	// eventContains is true for an events row whose event bytes contain
	// the text argument.
	eventContains string
	// keyOnly prefixes a column of a condition that must not choose the
	// index a query is read by: SQLite's planner has no statistics and
	// prefers any index with an equality on its first column (state) to
	// a range of the primary key, which scans every finished command;
	// SQLite's unary + keeps the term out of index choice. PostgreSQL
	// plans by statistics and has no unary + for text.
	keyOnly string
	// retryable reports a failure caused by a concurrent transaction that
	// running the job again may not meet (PostgreSQL's deadlock and
	// serialization failures), for the writer to run the job again
	// (groupcommit's Options.Retryable); nil where writes never conflict
	// (SQLite, one writer).
	retryable func(error) bool
	// maxConns bounds the connection pool.
	maxConns int
}

// sqliteDialect is the embedded SQLite store's, the relay's default.
var sqliteDialect = &dialect{
	name:     "sqlite",
	greatest: "MAX",
	claim: `UPDATE commands SET state = ?, agent_id = ?, updated_at = ?
		WHERE state = ? AND rowid IN (SELECT rowid FROM commands WHERE state = ? AND deadline > ?
			AND line_key IN (SELECT value FROM json_each(?))
			AND line_key IN (SELECT line_key FROM line_bindings WHERE agent_id = ?)
			AND NOT EXISTS (SELECT 1 FROM json_each(commands.needs) n WHERE n.value IN (SELECT value FROM json_each(?)))
			ORDER BY created_at, rowid LIMIT MAX(0, ? - (` + sqlInFlight + `)))
		RETURNING ` + claimedCols,
	eventSeq:    sqlEventSeq,
	streamEpoch: sqlStreamEpoch,
	insertEvent: `INSERT OR IGNORE INTO events(agent_id, agent_seq, key, event, received_at, line_key) VALUES(?, ?, ?, ?, ?, ?)`,
	// sqlite_sequence never goes back, not even when pruning has deleted
	// every event.
	eventHead:     `SELECT seq FROM sqlite_sequence WHERE name = 'events'`,
	agentLines:    `(SELECT json_group_array(line_key) FROM (SELECT line_key FROM line_bindings b WHERE b.agent_id = agents.id ORDER BY line_key))`,
	eventContains: `instr(event, CAST(? AS BLOB)) > 0`,
	keyOnly:       "+",
	// Readers share the file with the one writer.
	maxConns: 4,
}
