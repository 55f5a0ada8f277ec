package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/line-agent/line-agent/pkg/groupcommit"
)

// pgInList is the set of strings in one jsonList argument, for IN, in
// PostgreSQL's SQL (SQLite's spelling is SELECT value FROM json_each(?)).
const pgInList = `(SELECT jsonb_array_elements_text(?::jsonb))`

// postgresDialect is the PostgreSQL store's (docs/scaling.md). Its reads
// that decide a write lock the rows they read: one relay has one writer,
// as on SQLite, but line-relay's other commands (token create, line move,
// api-token) write beside it, and so do the other replicas.
var postgresDialect = &dialect{
	name:       "postgres",
	greatest:   "GREATEST",
	forUpdate:  " FOR UPDATE",
	skipLocked: " FOR UPDATE SKIP LOCKED",
	// A queued command another transaction is claiming is skipped, not
	// waited for: it is that transaction's.
	// ARRAY(...) runs the pick once, as a unit, before the update, which
	// finds the picked rows by the primary key (rowid has no index here).
	claim: `UPDATE commands SET state = ?, agent_id = ?, updated_at = ?
		WHERE state = ? AND id = ANY(ARRAY(SELECT id FROM commands WHERE state = ? AND deadline > ?
			AND line_key IN ` + pgInList + `
			AND line_key IN (SELECT line_key FROM line_bindings WHERE agent_id = ?)
			AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(commands.needs::jsonb) AS n(need)
				WHERE n.need IN ` + pgInList + `)
			ORDER BY created_at, rowid LIMIT GREATEST(0, ? - (` + sqlInFlight + `)) FOR UPDATE SKIP LOCKED))
		RETURNING ` + claimedCols,
	// The agent's row stays locked until the batch commits: two
	// transactions storing the same agent's events take turns.
	eventSeq: sqlEventSeq + ` FOR UPDATE`,
	// FOR KEY SHARE waits for a Hello holding the row FOR UPDATE and then
	// reads the epoch it committed, so no write of a replaced stream
	// commits after the Hello that replaced it; writes of the same epoch
	// share the lock.
	streamEpoch: sqlStreamEpoch + ` FOR KEY SHARE`,
	notify:      `SELECT pg_notify(?, ?)`,
	insertEvent: `INSERT INTO events(agent_id, agent_seq, key, event, received_at, line_key) VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
	// One writer per relay stores events in turn already; the lock is for
	// writers in other processes (replicas), held until the batch commits.
	eventsLock: `SELECT pg_advisory_xact_lock(` + eventsLockKey + `)`,
	// A sequence hands out values outside transactions (one a rolled back
	// insert took is gone), so the head is read from what is committed: the
	// newest event, or the newest pruned one when pruning left none.
	eventHead: `SELECT GREATEST((SELECT COALESCE(MAX(relay_seq), 0) FROM events),
		(SELECT COALESCE(MAX(through_seq), 0) FROM events_pruned))`,
	agentLines:    `(SELECT COALESCE(json_agg(line_key ORDER BY line_key), '[]'::json)::text FROM line_bindings b WHERE b.agent_id = agents.id)`,
	eventContains: `position(convert_to(?, 'UTF8') in event) > 0`,
	retryable:     pgRetryable,
	maxConns:      8,
}

// pgRetryable: SQLSTATE 40001 (serialization_failure) and 40P01
// (deadlock_detected) end a statement only because of what a concurrent
// transaction did; the same work may succeed when run again.
func pgRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// isPostgresURL reports whether a --store value names a PostgreSQL
// database rather than a SQLite file.
func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// redactDSN is a store URL fit to print: its password, in the user part or
// as a password= parameter, replaced by xxxxx. Anything that does not parse
// as a URL is replaced whole, since it cannot be told what in it is secret.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "postgres://(unparsable store URL)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// pgConnectTimeout bounds each new connection when the URL sets no
// connect_timeout of its own, so an unreachable server fails the start.
const pgConnectTimeout = 10 * time.Second

// openPostgres opens the PostgreSQL database dsn names and brings its
// schema to this relay's version. libpq's environment variables fill in
// what the URL leaves out (PGPASSWORD, PGSSLMODE, ...), and ~/.pgpass is
// read, so the password need not be on the command line. An error never
// carries the password.
func openPostgres(dsn string) (*store, error) {
	where := redactDSN(dsn)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's message, and net/url's inside it, quote the URL: say what
		// is wrong without it.
		reason := "the URL does not parse"
		var ue *url.Error
		var pe *pgconn.ParseConfigError
		switch {
		case errors.As(err, &ue):
			reason = ue.Err.Error()
		case errors.As(err, &pe) && pe.Unwrap() != nil:
			reason = pe.Unwrap().Error()
		}
		return nil, fmt.Errorf("store %s: %s", where, reason)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	// The row locks are reasoned about at READ COMMITTED (docs/scaling.md),
	// whatever the server's default is.
	cfg.RuntimeParams["default_transaction_isolation"] = "read committed"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "line-relay"
	}
	db := sql.OpenDB(pgConnector{stdlib.GetConnector(*cfg)})
	db.SetMaxOpenConns(postgresDialect.maxConns)
	db.SetMaxIdleConns(postgresDialect.maxConns)
	st := &store{db: db, d: postgresDialect, where: where, listen: cfg.Copy()}
	if err := migratePostgres(context.Background(), db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", where, err)
	}
	if err := st.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", where, err)
	}
	st.w = groupcommit.New(db, groupcommit.Options{MaxBatch: maxWriteBatch, Retryable: postgresDialect.retryable})
	return st, nil
}

// postgresBase is the schema version postgresSchema creates: PostgreSQL
// databases start there and follow the numbered migrations after it.
const postgresBase = 7

// postgresSchema is the SQLite schema at version postgresBase, in
// PostgreSQL's types: BIGINT for every integer (timestamps stay Unix
// nanoseconds), BYTEA for blobs, an identity column for relay_seq, and an
// explicit rowid column in commands, the insertion order the queries
// break created_at ties with (SQLite's implicit rowid). Text compares
// bytewise (COLLATE "C"), as in SQLite: ids are compared as ranges and
// listings are ordered by them.
const postgresSchema = `
CREATE TABLE project_tokens (
	hash       TEXT COLLATE "C" PRIMARY KEY,
	created_at BIGINT NOT NULL,
	lines      TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE agents (
	id                  TEXT COLLATE "C" PRIMARY KEY,
	secret_hash         TEXT NOT NULL,
	hostname            TEXT NOT NULL DEFAULT '',
	version             TEXT NOT NULL DEFAULT '',
	os_version          TEXT NOT NULL DEFAULT '',
	driver              TEXT NOT NULL DEFAULT '',
	lines               TEXT NOT NULL DEFAULT '[]',
	capabilities        TEXT NOT NULL DEFAULT '[]',
	enrolled_at         BIGINT NOT NULL,
	last_seen           BIGINT NOT NULL DEFAULT 0,
	event_seq           BIGINT NOT NULL DEFAULT 0,
	last_health         BYTEA,
	disconnected_at     BIGINT NOT NULL DEFAULT 0,
	disconnect_graceful BIGINT NOT NULL DEFAULT 0,
	disconnect_reason   TEXT NOT NULL DEFAULT '',
	allowed_lines       TEXT NOT NULL DEFAULT '[]',
	refused_lines       TEXT NOT NULL DEFAULT '[]',
	journal_epoch       TEXT NOT NULL DEFAULT '',
	chatdb_cursor       BYTEA
);
CREATE TABLE access_tokens (
	hash       TEXT COLLATE "C" PRIMARY KEY,
	agent_id   TEXT COLLATE "C" NOT NULL REFERENCES agents(id),
	expires_at BIGINT NOT NULL
);
CREATE INDEX access_tokens_agent ON access_tokens(agent_id);
CREATE TABLE commands (
	id            TEXT COLLATE "C" PRIMARY KEY,
	line          TEXT NOT NULL,
	line_key      TEXT COLLATE "C" NOT NULL,
	kind          TEXT NOT NULL,
	command       BYTEA NOT NULL,
	state         TEXT NOT NULL,
	agent_id      TEXT COLLATE "C" NOT NULL DEFAULT '',
	deadline      BIGINT NOT NULL,
	detail        TEXT NOT NULL DEFAULT '',
	progress      BYTEA,
	result        BYTEA,
	error_code    TEXT NOT NULL DEFAULT '',
	error_message TEXT NOT NULL DEFAULT '',
	error         BYTEA,
	created_at    BIGINT NOT NULL,
	updated_at    BIGINT NOT NULL,
	fingerprint   TEXT NOT NULL DEFAULT '',
	needs         TEXT NOT NULL DEFAULT '[]',
	rowid         BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX commands_queue ON commands(state, line_key, created_at);
CREATE INDEX commands_agent ON commands(agent_id, state);
CREATE INDEX commands_deadline ON commands(state, deadline);
CREATE TABLE events (
	relay_seq   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	agent_id    TEXT COLLATE "C" NOT NULL,
	agent_seq   BIGINT NOT NULL,
	key         TEXT COLLATE "C" NOT NULL,
	event       BYTEA NOT NULL,
	received_at BIGINT NOT NULL,
	line_key    TEXT COLLATE "C" NOT NULL DEFAULT '',
	UNIQUE(agent_id, key)
);
CREATE INDEX events_line ON events(line_key, relay_seq);
CREATE INDEX events_received ON events(received_at);
CREATE TABLE events_pruned (
	line_key    TEXT COLLATE "C" PRIMARY KEY,
	through_seq BIGINT NOT NULL
);
CREATE TABLE line_bindings (
	line_key TEXT COLLATE "C" PRIMARY KEY,
	line     TEXT NOT NULL,
	agent_id TEXT COLLATE "C" NOT NULL REFERENCES agents(id),
	bound_at BIGINT NOT NULL
);
CREATE INDEX line_bindings_agent ON line_bindings(agent_id);
CREATE TABLE blob_chunks (
	blob_id    TEXT COLLATE "C" NOT NULL,
	command_id TEXT COLLATE "C" NOT NULL,
	idx        BIGINT NOT NULL,
	data       BYTEA NOT NULL,
	PRIMARY KEY(blob_id, idx)
);
CREATE INDEX blob_chunks_command ON blob_chunks(command_id);
CREATE TABLE api_tokens (
	id         TEXT COLLATE "C" PRIMARY KEY,
	hash       TEXT COLLATE "C" NOT NULL UNIQUE,
	lines      TEXT NOT NULL,
	pool       BIGINT NOT NULL,
	created_at BIGINT NOT NULL,
	revoked_at BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE pool_assignments (
	token_id    TEXT COLLATE "C" NOT NULL REFERENCES api_tokens(id),
	handle_key  TEXT COLLATE "C" NOT NULL,
	line_key    TEXT COLLATE "C" NOT NULL,
	assigned_at BIGINT NOT NULL,
	PRIMARY KEY(token_id, handle_key)
);
CREATE TABLE uploads (
	guid       TEXT COLLATE "C" PRIMARY KEY,
	token_id   TEXT COLLATE "C" NOT NULL,
	blob_id    TEXT COLLATE "C" NOT NULL,
	file_name  TEXT NOT NULL,
	mime_type  TEXT NOT NULL,
	size       BIGINT NOT NULL,
	sha256     TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX uploads_expiry ON uploads(expires_at);
`

// eventsLockKey is the pg_advisory_xact_lock key of dialect.eventsLock
// (the bytes of "lnevents").
const eventsLockKey = "7813293962716673139"

// migrationLock is the pg_advisory_xact_lock key every migration
// transaction takes first, so relays starting at once against one database
// migrate one after the other: the second finds the work done. (The bytes
// of "lnrelay1" as a number: any constant no other program uses.)
const migrationLock int64 = 0x6c6e72656c617931

// migratePostgres brings db to the schema version migs lead to: a new
// database gets postgresSchema (version postgresBase), then each migration
// after it runs, each in one transaction with its version bump. Every
// transaction takes migrationLock and reads the version again under it, so
// concurrent starts never apply a step twice.
func migratePostgres(ctx context.Context, db *sql.DB, migs []migration) error {
	latest := len(migs) + 1
	for {
		done, err := migrateStep(ctx, db, migs, latest)
		if err != nil || done {
			return err
		}
	}
}

// migrateStep runs the next step towards latest in one transaction, and
// reports done when there was none left.
func migrateStep(ctx context.Context, db *sql.DB, migs []migration, latest int) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, migrationLock); err != nil {
		return false, fmt.Errorf("take the migration lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)`); err != nil {
		return false, err
	}
	var v int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, postgresSchema); err != nil {
			return false, fmt.Errorf("create schema %d: %w", postgresBase, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version(version) VALUES(?)`, postgresBase); err != nil {
			return false, err
		}
		return false, tx.Commit()
	case err != nil:
		return false, err
	case v > latest:
		return false, fmt.Errorf("database schema %d is newer than this relay understands (%d)", v, latest)
	case v == latest:
		return true, nil
	}
	m := migs[v-1]
	if m.postgres == "" || migrationSteps[v+1] != nil {
		return false, fmt.Errorf("migrate to schema %d: the migration has no PostgreSQL text, or a step in Go that only SQLite runs", v+1)
	}
	if _, err := tx.ExecContext(ctx, m.postgres); err != nil {
		return false, fmt.Errorf("migrate to schema %d: %w", v+1, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, v+1); err != nil {
		return false, err
	}
	return false, tx.Commit()
}
