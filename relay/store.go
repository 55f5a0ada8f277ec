package relay

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"

	"github.com/line-agent/line-agent/pkg/groupcommit"
	"github.com/line-agent/line-agent/pkg/walcheckpoint"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// dbFile is the relay's database inside the data dir.
const dbFile = "relay.db"

// schemaVersion is stored in PRAGMA user_version (SQLite) and in the
// schema_version table (PostgreSQL): the schema the relay writes, version
// 1 and one more per migration, so a migration added (never one edited)
// is what old data dirs and databases get, on both backends alike.
var schemaVersion = len(migrations) + 1

// Command states as stored and shown in the HTTP API. A command only moves
// forward: queued → dispatched → accepted → in_progress → succeeded | failed.
const (
	stateQueued     = "queued"
	stateDispatched = "dispatched"
	stateAccepted   = "accepted"
	stateInProgress = "in_progress"
	stateSucceeded  = "succeeded"
	stateFailed     = "failed"
)

const schema = `
CREATE TABLE IF NOT EXISTS project_tokens (
	hash       TEXT PRIMARY KEY,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
	id                  TEXT PRIMARY KEY,
	secret_hash         TEXT NOT NULL,
	hostname            TEXT NOT NULL DEFAULT '',
	version             TEXT NOT NULL DEFAULT '',
	os_version          TEXT NOT NULL DEFAULT '',
	driver              TEXT NOT NULL DEFAULT '',
	lines               TEXT NOT NULL DEFAULT '[]',
	capabilities        TEXT NOT NULL DEFAULT '[]',
	enrolled_at         INTEGER NOT NULL,
	last_seen           INTEGER NOT NULL DEFAULT 0,
	event_seq           INTEGER NOT NULL DEFAULT 0,
	last_health         BLOB,
	disconnected_at     INTEGER NOT NULL DEFAULT 0,
	disconnect_graceful INTEGER NOT NULL DEFAULT 0,
	disconnect_reason   TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS access_tokens (
	hash       TEXT PRIMARY KEY,
	agent_id   TEXT NOT NULL REFERENCES agents(id),
	expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS access_tokens_agent ON access_tokens(agent_id);
CREATE TABLE IF NOT EXISTS commands (
	id            TEXT PRIMARY KEY,
	line          TEXT NOT NULL,
	line_key      TEXT NOT NULL,
	kind          TEXT NOT NULL,
	command       BLOB NOT NULL,
	state         TEXT NOT NULL,
	agent_id      TEXT NOT NULL DEFAULT '',
	deadline      INTEGER NOT NULL,
	detail        TEXT NOT NULL DEFAULT '',
	progress      BLOB,
	result        BLOB,
	error_code    TEXT NOT NULL DEFAULT '',
	error_message TEXT NOT NULL DEFAULT '',
	error         BLOB,
	created_at    INTEGER NOT NULL,
	updated_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_queue ON commands(state, line_key, created_at);
CREATE INDEX IF NOT EXISTS commands_agent ON commands(agent_id, state);
CREATE INDEX IF NOT EXISTS commands_deadline ON commands(state, deadline);
CREATE TABLE IF NOT EXISTS events (
	relay_seq   INTEGER PRIMARY KEY AUTOINCREMENT,
	agent_id    TEXT NOT NULL,
	agent_seq   INTEGER NOT NULL,
	key         TEXT NOT NULL,
	event       BLOB NOT NULL,
	received_at INTEGER NOT NULL,
	UNIQUE(agent_id, key)
);
`

// migration is one step of the schema, in each dialect's SQL.
type migration struct {
	// sqlite brings a SQLite database to the step's version.
	sqlite string
	// postgres does the same for PostgreSQL. The steps up to postgresBase
	// have none: a PostgreSQL database starts at postgresBase, whole
	// (postgresSchema, store_postgres.go).
	postgres string
}

// migrations bring a database from schema version i+1 to i+2; each runs
// once, in order, in one transaction with the version bump. The next one
// is added here, once, with its text for each dialect.
var migrations = []migration{
	// 2: lines are bound to agents (docs/security.md), project tokens may
	// name the lines their agents may serve, journals have epochs, a
	// command remembers what it was submitted as, and large payloads are
	// kept out of stream frames as blobs.
	{sqlite: `ALTER TABLE project_tokens ADD COLUMN lines TEXT NOT NULL DEFAULT '[]';
	ALTER TABLE agents ADD COLUMN allowed_lines TEXT NOT NULL DEFAULT '[]';
	ALTER TABLE agents ADD COLUMN refused_lines TEXT NOT NULL DEFAULT '[]';
	ALTER TABLE agents ADD COLUMN journal_epoch TEXT NOT NULL DEFAULT '';
	ALTER TABLE commands ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
	CREATE TABLE line_bindings (
		line_key TEXT PRIMARY KEY,
		line     TEXT NOT NULL,
		agent_id TEXT NOT NULL REFERENCES agents(id),
		bound_at INTEGER NOT NULL
	);
	CREATE INDEX line_bindings_agent ON line_bindings(agent_id);
	CREATE TABLE blob_chunks (
		blob_id    TEXT NOT NULL,
		command_id TEXT NOT NULL,
		idx        INTEGER NOT NULL,
		data       BLOB NOT NULL,
		PRIMARY KEY(blob_id, idx)
	);
	CREATE INDEX blob_chunks_command ON blob_chunks(command_id);`},
	// 3: tokens of the platform API (photon.imessage.v1) and the sticky
	// line each end user of a pool token was given.
	{sqlite: `CREATE TABLE api_tokens (
		id         TEXT PRIMARY KEY,
		hash       TEXT NOT NULL UNIQUE,
		lines      TEXT NOT NULL,
		pool       INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		revoked_at INTEGER NOT NULL DEFAULT 0
	);
	CREATE TABLE pool_assignments (
		token_id    TEXT NOT NULL REFERENCES api_tokens(id),
		handle_key  TEXT NOT NULL,
		line_key    TEXT NOT NULL,
		assigned_at INTEGER NOT NULL,
		PRIMARY KEY(token_id, handle_key)
	);`},
	// 4: events carry the key of their line, so the platform API serves a
	// token the events of its lines in the relay's own order (relay_seq,
	// its durable sequence; docs/platform-api.md), and remember how far
	// each line's events were pruned, so a catch-up from an older cursor
	// is refused instead of answered with a gap. The line keys of events
	// stored before are filled in Go (backfillEventLines).
	{sqlite: `ALTER TABLE events ADD COLUMN line_key TEXT NOT NULL DEFAULT '';
	CREATE INDEX events_line ON events(line_key, relay_seq);
	CREATE INDEX events_received ON events(received_at);
	CREATE TABLE events_pruned (
		line_key    TEXT PRIMARY KEY,
		through_seq INTEGER NOT NULL
	);`},
	// 5: files uploaded through the platform API (UploadAttachment), each
	// usable only by its token until it expires; the bytes are blob_chunks
	// under command_id "upload:<guid>" (api_attachments_store.go).
	{sqlite: `CREATE TABLE uploads (
		guid       TEXT PRIMARY KEY,
		token_id   TEXT NOT NULL,
		blob_id    TEXT NOT NULL,
		file_name  TEXT NOT NULL,
		mime_type  TEXT NOT NULL,
		size       INTEGER NOT NULL,
		sha256     TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL
	);
	CREATE INDEX uploads_expiry ON uploads(expires_at);`},
	// 6: the chat.db cursor of each agent's latest CursorMark, handed
	// back in Welcome to a new or restored journal (cursors.go).
	{sqlite: `ALTER TABLE agents ADD COLUMN chatdb_cursor BLOB;`},
	// 7: what each command needs of its agent's health (routing.go), so
	// the claim holds back what a DOWN component cannot run. Commands
	// stored before need nothing and route as they did.
	{sqlite: `ALTER TABLE commands ADD COLUMN needs TEXT NOT NULL DEFAULT '[]';`},
	// 8: several replicas on one PostgreSQL database (docs/scaling.md,
	// replica.go): each agent's stream epoch, the fencing token of its
	// newest stream, bumped by every Hello, with the replica holding it
	// and whether it is healthy there; and each replica's last sign of
	// life, so the others can tell a stream held by a live replica from
	// one a dead replica left behind.
	{sqlite: `ALTER TABLE agents ADD COLUMN stream_epoch INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN stream_replica TEXT NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN stream_healthy INTEGER NOT NULL DEFAULT 0;
	CREATE TABLE relay_replicas (
		id         TEXT PRIMARY KEY,
		started_at INTEGER NOT NULL,
		seen_at    INTEGER NOT NULL
	);`,
		postgres: `ALTER TABLE agents ADD COLUMN stream_epoch BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE agents ADD COLUMN stream_replica TEXT COLLATE "C" NOT NULL DEFAULT '';
	ALTER TABLE agents ADD COLUMN stream_healthy BIGINT NOT NULL DEFAULT 0;
	CREATE TABLE relay_replicas (
		id         TEXT COLLATE "C" PRIMARY KEY,
		started_at BIGINT NOT NULL,
		seen_at    BIGINT NOT NULL
	);`},
}

// migrationSteps are the parts of a migration SQL cannot do, keyed by the
// schema version they complete; each runs after that version's SQL, in its
// transaction. The ones so far are SQLite's: they come before postgresBase.
var migrationSteps = map[int]func(*sql.Tx) error{
	4: backfillEventLines,
}

// store is the relay's durable state: one SQLite file by default, or a
// PostgreSQL database (store_postgres.go, docs/scaling.md). Reads use the
// pool; every write is a short job for the one writer, which commits
// waiting jobs together (group commit, see pkg/groupcommit): a caller
// returns once its write is committed, as durable as before (WAL,
// synchronous=NORMAL on SQLite), but many callers share a commit. A stream
// queues the jobs of its frames together, so they take effect in the order
// sent. Nothing holds a transaction across a network call.
type store struct {
	db *sql.DB // reads use the pool; writes go through w
	w  *groupcommit.Writer
	// d is the database's dialect: what its SQL spells its own way.
	d *dialect
	// where is the store's location fit to print: a SQLite file's path, a
	// PostgreSQL URL without its password.
	where string
	// stmts holds the hot statements prepared once (store_prepared.go);
	// read-only after the store is open.
	stmts map[string]*sql.Stmt
	// origin names this process in what the store announces to the other
	// replicas (store.announce): the relay's replica id, so a replica
	// skips its own; "" for line-relay's other commands. Set once, before
	// the relay starts.
	origin string
	// listen is how the LISTEN connection reaches the PostgreSQL database
	// (replica_listen.go), outside database/sql; nil on SQLite.
	listen *pgx.ConnConfig
	// ckpt copies the WAL into relay.db off the write path (see
	// pkg/walcheckpoint); nil on PostgreSQL.
	ckpt *walcheckpoint.Checkpointer
}

// maxWriteBatch bounds how many write jobs share one transaction, so one
// commit never grows without limit under a flood of submits.
const maxWriteBatch = 512

// Storage says where a relay keeps its state, for the commands that work
// on it without a running server (line-relay token create, line,
// api-token): the same two places a relay serving it is given.
type Storage struct {
	// DataDir is the relay's data directory, whose relay.db is the store
	// when Store is empty (Options.DataDir). Only then is it needed.
	DataDir string
	// Store is Options.Store: a postgres:// URL or a SQLite file's path.
	Store string
}

// open opens the store at names; create makes the data directory first
// when the store is the relay.db in it.
func (at Storage) open(create bool) (*store, error) {
	if at.Store == "" && create {
		if err := ensureDataDir(at.DataDir); err != nil {
			return nil, err
		}
	}
	if at.Store == "" && at.DataDir == "" {
		return nil, errors.New("relay: a data dir or a store is required")
	}
	return openStoreAt(at.DataDir, at.Store)
}

// openStoreAt opens the store location names (Options.Store): relay.db in
// dataDir when location is empty, the PostgreSQL database of a postgres://
// or postgresql:// URL, else the SQLite file at that path.
func openStoreAt(dataDir, location string) (*store, error) {
	switch {
	case location == "":
		return openStore(dataDir)
	case isPostgresURL(location):
		return openPostgres(location)
	default:
		return openSQLite(location)
	}
}

// openStore opens (creating if needed) relay.db in dir.
func openStore(dir string) (*store, error) {
	return openSQLite(filepath.Join(dir, dbFile))
}

// openSQLite opens (creating if needed) the SQLite store at path. WAL lets
// the HTTP API read while streams write; _txlock=immediate makes every
// transaction take the write lock up front so two writers never deadlock
// on a lock upgrade.
func openSQLite(path string) (*store, error) {
	// Events hold message text: create the file private before SQLite does
	// (its -wal and -shm files inherit the mode).
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	// The background checkpoints (pkg/walcheckpoint) copy the WAL into
	// relay.db; the writer's own only when they fall far behind.
	q.Add("_pragma", walcheckpoint.Pragma())
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(sqliteDialect.maxConns)
	// Keep every connection open: one closed after a burst of reads takes
	// its prepared statements with it, and a new one runs the pragmas and
	// prepares them again.
	db.SetMaxIdleConns(sqliteDialect.maxConns)
	st := &store{db: db, d: sqliteDialect, where: path}
	if err := st.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare %s: %w", path, err)
	}
	if err := st.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("prepare %s: %w", path, err)
	}
	st.ckpt = walcheckpoint.Start(db, walcheckpoint.Gap)
	st.w = groupcommit.New(db, groupcommit.Options{MaxBatch: maxWriteBatch, AfterBatch: st.ckpt.Wrote})
	return st, nil
}

func (st *store) migrate() error {
	var v int
	if err := st.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > schemaVersion {
		return fmt.Errorf("database schema %d is newer than this relay understands (%d)", v, schemaVersion)
	}
	if v == 0 {
		if _, err := st.db.Exec(schema); err != nil {
			return err
		}
		v = 1
	}
	for ; v < schemaVersion; v++ {
		tx, err := st.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[v-1].sqlite); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to schema %d: %w", v+1, err)
		}
		if step := migrationSteps[v+1]; step != nil {
			if err := step(tx); err != nil {
				tx.Rollback()
				return fmt.Errorf("migrate to schema %d: %w", v+1, err)
			}
		}
		if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// close commits the writes already queued, then closes the prepared
// statements and the database.
func (st *store) close() error {
	st.w.Close()
	if st.ckpt != nil {
		st.ckpt.Close()
	}
	return errors.Join(st.closeStmts(), st.db.Close())
}

// tx runs fn as one write job and waits until it is committed: fn's changes
// are kept unless fn fails, and they share a commit with whatever other
// writes were waiting. fn may run more than once (see pkg/groupcommit) and
// sets what it reports afresh each time. After close it fails with
// groupcommit.ErrClosed.
func (st *store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return st.w.Do(ctx, fn)
}

// exec runs one statement as a write job and returns its rows affected.
func (st *store) exec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// collect reads every row of rows with scan and closes rows, as a write
// job must before its next statement (SQLite's transaction is one
// connection). No rows is an empty slice, never nil, so a list answered
// as JSON is [] (an empty slice costs no allocation).
func collect[T any](rows *sql.Rows, scan func(*sql.Rows) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanOne is collect's scan of a one-column row.
func scanOne[T any](rows *sql.Rows) (v T, err error) { return v, rows.Scan(&v) }

// ---- project tokens and agents ----------------------------------------

// addProjectToken stores a project token's hash and the line keys its
// agents may serve (empty: any line no other agent holds).
func (st *store) addProjectToken(ctx context.Context, hash string, lineKeys []string, now time.Time) error {
	_, err := st.exec(ctx, `INSERT INTO project_tokens(hash, lines, created_at) VALUES(?, ?, ?)`, hash, jsonList(lineKeys), now.UnixNano())
	return err
}

// projectToken reports whether hash is a project token and the line keys it
// allows.
func (st *store) projectToken(ctx context.Context, hash string) (found bool, lineKeys []string, err error) {
	var lj string
	err = st.db.QueryRowContext(ctx, `SELECT lines FROM project_tokens WHERE hash = ?`, hash).Scan(&lj)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil, nil
	}
	if err != nil {
		return false, nil, err
	}
	_ = json.Unmarshal([]byte(lj), &lineKeys)
	return true, lineKeys, nil
}

// createAgent records a newly enrolled agent, its first access token and
// the bindings of the lines it enrolled with (those allowed and free) in
// one transaction, so an enrollment is all or nothing.
func (st *store) createAgent(ctx context.Context, id, secretHash, hostname, version string, lines, allowed []string, tokenHash string, expires, now time.Time) (refused []refusedLine, err error) {
	lj, aj := jsonList(lines), jsonList(allowed)
	err = st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO agents(id, secret_hash, hostname, version, lines, allowed_lines, enrolled_at) VALUES(?, ?, ?, ?, ?, ?, ?)`,
			id, secretHash, hostname, version, lj, aj, now.UnixNano()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO access_tokens(hash, agent_id, expires_at) VALUES(?, ?, ?)`, tokenHash, id, expires.UnixNano()); err != nil {
			return err
		}
		var err error
		_, refused, err = st.bindLines(ctx, tx, id, allowed, lines, now)
		return err
	})
	return refused, err
}

// agentSecretHash returns the stored secret hash, or "" for an unknown agent.
func (st *store) agentSecretHash(ctx context.Context, id string) (string, error) {
	var h string
	err := st.db.QueryRowContext(ctx, `SELECT secret_hash FROM agents WHERE id = ?`, id).Scan(&h)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return h, err
}

// addAccessToken stores a new token hash and drops the agent's expired ones,
// so the table does not grow with every refresh.
func (st *store) addAccessToken(ctx context.Context, hash, agentID string, expires, now time.Time) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE agent_id = ? AND expires_at <= ?`, agentID, now.UnixNano()); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO access_tokens(hash, agent_id, expires_at) VALUES(?, ?, ?)`, hash, agentID, expires.UnixNano())
		return err
	})
}

// accessToken looks up a token hash; found is false for an unknown token.
func (st *store) accessToken(ctx context.Context, hash string) (agentID string, expires time.Time, found bool, err error) {
	var exp int64
	err = st.db.QueryRowContext(ctx, `SELECT agent_id, expires_at FROM access_tokens WHERE hash = ?`, hash).Scan(&agentID, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	return agentID, time.Unix(0, exp), true, nil
}

// helloRecord is what an agent says about itself on every stream.
type helloRecord struct {
	hostname, version, osVersion, driver, epoch string
	lines, capabilities                         []string
	// wantsCursor: the agent's journal has no chat.db cursor yet.
	wantsCursor bool
	// replica is the replica taking the stream (Server.replica).
	replica string
}

// helloOutcome is what the relay decided about a Hello.
type helloOutcome struct {
	// storedSeq is the highest event sequence stored for the agent's
	// current journal: the resume point sent in Welcome.
	storedSeq uint64
	// newEpoch is set when the agent's journal is not the one the relay
	// knew (state.db was deleted or restored): the sequence check restarted.
	newEpoch  bool
	prevEpoch string
	// ackedCursor is the agent's latest CursorMark cursor, set only when
	// its journal is not the one the relay knew or Hello asked for it.
	ackedCursor []byte
	held        []string
	refused     []refusedLine
	// epoch is the new stream's fencing token (agents.stream_epoch): the
	// stream's writes count only while it is still the agent's epoch
	// (store.fenced).
	epoch int64
}

// recordHello stores what the agent announced, binds the lines it may hold
// and, when its journal epoch changed, restarts the agent's event sequence
// (events already stored are still recognised by key). It gives the new
// stream the next stream epoch, held by h.replica, which fences every
// older stream of the agent, on this replica or another, and announces it
// so the replica holding the older one ends it.
func (st *store) recordHello(ctx context.Context, id string, h helloRecord, now time.Time) (helloOutcome, error) {
	lj, cj := jsonList(h.lines), jsonList(h.capabilities)
	var out helloOutcome
	err := st.tx(ctx, func(tx *sql.Tx) error {
		out = helloOutcome{}
		var s, streamEpoch int64
		var aj, epoch string
		var cursor []byte
		if err := tx.QueryRowContext(ctx, `SELECT event_seq, allowed_lines, journal_epoch, chatdb_cursor, stream_epoch FROM agents WHERE id = ?`+st.d.forUpdate, id).Scan(&s, &aj, &epoch, &cursor, &streamEpoch); err != nil {
			return err
		}
		out.epoch = streamEpoch + 1
		if h.epoch != epoch || h.wantsCursor {
			out.ackedCursor = cursor
		}
		var allowed []string
		_ = json.Unmarshal([]byte(aj), &allowed)
		var err error
		if out.held, out.refused, err = st.bindLines(ctx, tx, id, allowed, h.lines, now); err != nil {
			return err
		}
		if h.epoch != "" && h.epoch != epoch {
			// The first epoch an agent reports (epoch == "") is its journal
			// from before epochs existed, or its first stream: its sequence
			// stands. A different one is a new journal.
			out.newEpoch, out.prevEpoch = epoch != "", epoch
			if out.newEpoch {
				s = 0
			}
			epoch = h.epoch
		}
		out.storedSeq = uint64(s)
		rj, _ := json.Marshal(nonNilRefused(out.refused))
		_, err = tx.ExecContext(ctx, `UPDATE agents SET hostname = ?, version = ?, os_version = ?, driver = ?, lines = ?, capabilities = ?,
			refused_lines = ?, journal_epoch = ?, event_seq = ?,
			last_seen = ?, disconnected_at = 0, disconnect_graceful = 0, disconnect_reason = '',
			stream_epoch = ?, stream_replica = ?, stream_healthy = 0 WHERE id = ?`,
			h.hostname, h.version, h.osVersion, h.driver, lj, cj, string(rj), epoch, s, now.UnixNano(),
			out.epoch, h.replica, id)
		if err != nil {
			return err
		}
		return st.announce(ctx, tx, wakeStream, id+" "+strconv.FormatInt(out.epoch, 10))
	})
	return out, err
}

func nonNilRefused(r []refusedLine) []refusedLine {
	if r == nil {
		return []refusedLine{}
	}
	return r
}

func (st *store) touchAgent(ctx context.Context, id string, lastSeen time.Time) error {
	_, err := st.exec(ctx, `UPDATE agents SET last_seen = `+st.d.greatest+`(last_seen, ?) WHERE id = ?`, lastSeen.UnixNano(), id)
	return err
}

// saveHealth keeps the last report of the stream of epoch, and whether
// the relay counts the agent healthy, for operators and for the replicas
// that do not hold its stream (replica.go). A stream that lost the agent
// (a newer epoch) changes nothing.
func (st *store) saveHealth(ctx context.Context, id string, epoch int64, report []byte, healthy bool) error {
	_, err := st.exec(ctx, `UPDATE agents SET last_health = ?, stream_healthy = ? WHERE id = ? AND stream_epoch = ?`, report, healthy, id, epoch)
	return err
}

// saveHealthy records the relay's verdict alone (health checks went
// unanswered: there is no report to keep).
func (st *store) saveHealthy(ctx context.Context, id string, epoch int64, healthy bool) error {
	_, err := st.exec(ctx, `UPDATE agents SET stream_healthy = ? WHERE id = ? AND stream_epoch = ?`, healthy, id, epoch)
	return err
}

// recordDisconnect records how the stream of epoch ended. When a newer
// stream has the agent already (a reconnect that reached another replica
// first), the agent is not disconnected and nothing changes.
func (st *store) recordDisconnect(ctx context.Context, id string, epoch int64, at, lastSeen time.Time, graceful bool, reason string) error {
	_, err := st.exec(ctx, `UPDATE agents SET disconnected_at = ?, disconnect_graceful = ?, disconnect_reason = ?, last_seen = `+st.d.greatest+`(last_seen, ?) WHERE id = ? AND stream_epoch = ?`,
		at.UnixNano(), graceful, reason, lastSeen.UnixNano(), id, epoch)
	return err
}

// agentRow is one agents row as the HTTP API needs it.
type agentRow struct {
	id, hostname, version, osVersion, driver string
	lines, capabilities                      []string
	lastSeen, disconnectedAt                 time.Time
	graceful                                 bool
	reason                                   string
	lastHealth                               []byte
	refused                                  []refusedLine
	held                                     []string
	// stream is where the agent's newest stream is as the store knows it,
	// for the agents whose stream another replica holds (replica.go).
	stream streamRecord
}

func (st *store) listAgents(ctx context.Context) ([]agentRow, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT id, hostname, version, os_version, driver, lines, capabilities, last_seen,
		disconnected_at, disconnect_graceful, disconnect_reason, last_health, refused_lines, `+st.d.agentLines+`,
		`+streamRecordCols+`
		FROM agents ORDER BY enrolled_at, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []agentRow
	for rows.Next() {
		var r agentRow
		var lj, cj, rj, hj string
		var seen, disc, replicaSeen int64
		if err := rows.Scan(&r.id, &r.hostname, &r.version, &r.osVersion, &r.driver, &lj, &cj, &seen, &disc, &r.graceful, &r.reason, &r.lastHealth, &rj, &hj,
			&r.stream.replica, &r.stream.healthy, &replicaSeen); err != nil {
			return nil, err
		}
		r.stream.disconnected = disc > 0
		r.stream.replicaSeen = time.Unix(0, replicaSeen)
		_ = json.Unmarshal([]byte(rj), &r.refused)
		_ = json.Unmarshal([]byte(hj), &r.held)
		_ = json.Unmarshal([]byte(lj), &r.lines)
		_ = json.Unmarshal([]byte(cj), &r.capabilities)
		if seen > 0 {
			r.lastSeen = time.Unix(0, seen)
		}
		if disc > 0 {
			r.disconnectedAt = time.Unix(0, disc)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ---- events -------------------------------------------------------------

// eventIn is one event as received, already marshalled.
type eventIn struct {
	seq     uint64
	key     string
	lineKey string // "" when the agent could not tell the line
	bytes   []byte
}

// storeEventsFn stores a batch in one transaction. Events arrive in sequence
// order, so one at or below the stored sequence is a redelivery and is
// skipped; one with a known key is dropped by UNIQUE(agent_id, key). It
// sets the new stored sequence and how many rows were added.
//
// An event for a line the agent does not hold is consumed (its sequence
// counts, so the agent moves on) but not stored, and its line is added to
// *foreign: an agent speaks only for its own lines. Each event is stored
// with its line's key (events.line_key, what the platform API filters on);
// one without a line gets the agent's line when it holds exactly one.
//
// It is a write job (see store.tx); *stored, *added and *foreign are set when
// it has run.
func (st *store) storeEventsFn(ctx context.Context, agentID string, evs []eventIn, now time.Time, stored *uint64, added *int, foreign *[]string) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		// The events lock is taken before the first insert, not at the
		// start: a batch that only repeats what is stored (events sent
		// again because their ack was lost) inserts nothing and need not
		// wait for the fleet's other event writers.
		locked := st.d.eventsLock == ""
		var s int64
		if err := st.txQueryRow(ctx, tx, st.d.eventSeq, agentID).Scan(&s); err != nil {
			return err
		}
		*stored = uint64(s)
		*added = 0
		*foreign = nil
		holds := map[string]bool{}
		sole, soleRead := "", false
		for _, ev := range evs {
			if ev.seq <= *stored {
				continue
			}
			line := ev.lineKey
			if line == "" {
				if !soleRead {
					var err error
					if sole, err = soleLine(ctx, tx, agentID); err != nil {
						return err
					}
					soleRead = true
				}
				line = sole
			}
			if ev.lineKey != "" {
				h, seen := holds[ev.lineKey]
				if !seen {
					var one int
					err := st.txQueryRow(ctx, tx, sqlHoldsLine, ev.lineKey, agentID).Scan(&one)
					if err != nil && !errors.Is(err, sql.ErrNoRows) {
						return err
					}
					h = err == nil
					holds[ev.lineKey] = h
				}
				if !h {
					*foreign = append(*foreign, ev.lineKey)
					*stored = ev.seq
					continue
				}
			}
			if !locked {
				if _, err := tx.ExecContext(ctx, st.d.eventsLock); err != nil {
					return err
				}
				locked = true
			}
			res, err := st.txExec(ctx, tx, st.d.insertEvent,
				agentID, int64(ev.seq), ev.key, ev.bytes, now.UnixNano(), line)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n > 0 {
				*added++
			}
			*stored = ev.seq
		}
		if _, err := st.txExec(ctx, tx, sqlSetEventSeq, int64(*stored), agentID); err != nil || *added == 0 {
			return err
		}
		return st.announce(ctx, tx, wakeEvents, "")
	}
}

// soleLine is the line agentID holds when it holds exactly one, else "":
// the line of an event the agent could not place (an empty Event.line).
func soleLine(ctx context.Context, tx *sql.Tx, agentID string) (string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT line_key FROM line_bindings WHERE agent_id = ? LIMIT 2`, agentID)
	if err != nil {
		return "", err
	}
	keys, err := collect(rows, scanOne[string])
	if err != nil {
		return "", err
	}
	if len(keys) != 1 {
		return "", nil
	}
	return keys[0], nil
}

// backfillEventLines completes migration 4: every event stored before it
// gets the key of its Event.line or, when that is empty, the line its agent
// holds if it holds exactly one (the rule storeEventsFn follows). An event
// still without a line is never served on the platform API.
func backfillEventLines(tx *sql.Tx) error {
	ctx := context.Background()
	type fill struct {
		seq           int64
		agentID, line string
	}
	var fills []fill
	rows, err := tx.QueryContext(ctx, `SELECT relay_seq, agent_id, event FROM events`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var f fill
		var b []byte
		if err := rows.Scan(&f.seq, &f.agentID, &b); err != nil {
			rows.Close()
			return err
		}
		if ev := (&linev1.Event{}); proto.Unmarshal(b, ev) == nil {
			f.line = lineKey(ev.GetLine())
		}
		fills = append(fills, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	sole := map[string]string{} // agent id → its one line, read once rows is closed
	for _, f := range fills {
		if f.line == "" {
			if _, ok := sole[f.agentID]; !ok {
				if sole[f.agentID], err = soleLine(ctx, tx, f.agentID); err != nil {
					return err
				}
			}
			f.line = sole[f.agentID]
		}
		if f.line == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE events SET line_key = ? WHERE relay_seq = ?`, f.line, f.seq); err != nil {
			return err
		}
	}
	return nil
}

// eventRow is one stored event.
type eventRow struct {
	relaySeq   int64
	agentID    string
	event      []byte
	receivedAt time.Time // set by lineEventsAfter only
}

func (st *store) eventsAfter(ctx context.Context, after int64, limit int) ([]eventRow, error) {
	rows, err := st.query(ctx, sqlEventsAfter, after, limit)
	if err != nil {
		return nil, err
	}
	return collect(rows, func(rows *sql.Rows) (r eventRow, err error) {
		return r, rows.Scan(&r.relaySeq, &r.agentID, &r.event)
	})
}

// ---- events on the platform API ------------------------------------------

// eventHead is the highest relay_seq ever given to an event: the head of
// the log every platform API sequence is a place in. It never goes back,
// not even when pruning has deleted every event (dialect.eventHead).
func (st *store) eventHead(ctx context.Context) (int64, error) {
	var head int64
	err := st.db.QueryRowContext(ctx, st.d.eventHead).Scan(&head)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return head, err
}

// lineEventsAfter returns up to limit events of the lines lineKeys after
// relay_seq after and, when upTo > 0, at or below upTo, in relay order.
func (st *store) lineEventsAfter(ctx context.Context, lineKeys []string, after, upTo int64, limit int) ([]eventRow, error) {
	if len(lineKeys) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(lineKeys)+3)
	for _, k := range lineKeys {
		args = append(args, k)
	}
	args = append(args, after)
	q := `SELECT relay_seq, agent_id, event, received_at FROM events WHERE line_key IN (?` + strings.Repeat(", ?", len(lineKeys)-1) + `) AND relay_seq > ?`
	if upTo > 0 {
		q += ` AND relay_seq <= ?`
		args = append(args, upTo)
	}
	q += ` ORDER BY relay_seq LIMIT ?`
	args = append(args, limit)
	rows, err := st.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows, func(rows *sql.Rows) (r eventRow, err error) {
		var at int64
		err = rows.Scan(&r.relaySeq, &r.agentID, &r.event, &at)
		r.receivedAt = time.Unix(0, at)
		return r, err
	})
}

// prunedThrough is the highest relay_seq pruned from any of the lines
// lineKeys (0 when none was): a cursor below it may have missed events
// the relay no longer has.
func (st *store) prunedThrough(ctx context.Context, lineKeys []string) (int64, error) {
	if len(lineKeys) == 0 {
		return 0, nil
	}
	args := make([]any, 0, len(lineKeys))
	for _, k := range lineKeys {
		args = append(args, k)
	}
	var through sql.NullInt64
	err := st.db.QueryRowContext(ctx, `SELECT MAX(through_seq) FROM events_pruned WHERE line_key IN (?`+strings.Repeat(", ?", len(lineKeys)-1)+`)`, args...).Scan(&through)
	return through.Int64, err
}

// originMessage returns the MessageEvent agentID reported for the message
// guid (its "<guid>/message/0" event), or nil when none is stored.
func (st *store) originMessage(ctx context.Context, agentID, guid string) (*linev1.MessageEvent, error) {
	var b []byte
	err := st.db.QueryRowContext(ctx, `SELECT event FROM events WHERE agent_id = ? AND key = ?`, agentID, guid+"/message/0").Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ev := &linev1.Event{}
	if err := proto.Unmarshal(b, ev); err != nil {
		return nil, nil
	}
	return ev.GetMessage(), nil
}

// pruneEvents deletes up to limit events received before cutoff, oldest
// first, and records for each line the highest relay_seq it lost (see
// prunedThrough). It returns how many it deleted; a caller that got limit
// calls again. A quick read first spares a write when nothing is due.
func (st *store) pruneEvents(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	var one int
	err := st.db.QueryRowContext(ctx, `SELECT 1 FROM events WHERE received_at < ? LIMIT 1`, cutoff.UnixNano()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n int
	err = st.tx(ctx, func(tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT relay_seq, line_key, received_at FROM events WHERE received_at < ? ORDER BY received_at, relay_seq LIMIT ?`,
			cutoff.UnixNano(), limit)
		if err != nil {
			return err
		}
		through := map[string]int64{}
		var lastSeq, lastAt int64
		for rows.Next() {
			var seq, at int64
			var line string
			if err := rows.Scan(&seq, &line, &at); err != nil {
				rows.Close()
				return err
			}
			through[line] = max(through[line], seq)
			lastSeq, lastAt = seq, at
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil || n == 0 {
			return err
		}
		for line, seq := range through {
			if _, err := tx.ExecContext(ctx, `INSERT INTO events_pruned(line_key, through_seq) VALUES(?, ?)
				ON CONFLICT(line_key) DO UPDATE SET through_seq = `+st.d.greatest+`(events_pruned.through_seq, excluded.through_seq)`, line, seq); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM events WHERE received_at < ? OR (received_at = ? AND relay_seq <= ?)`, lastAt, lastAt, lastSeq)
		return err
	})
	return n, err
}

// ---- commands -----------------------------------------------------------

// commandRow is one commands row.
type commandRow struct {
	id, line, kind, state, agentID, detail string
	fingerprint                            string
	// needs is what the command needs of its agent's health (needsOf),
	// written when it is stored; scanCommand does not read it back.
	needs                               []string
	command, progress, result, errProto []byte
	errCode, errMessage                 string
	deadline, created, updated          time.Time
}

const commandCols = `id, line, kind, command, state, agent_id, deadline, detail, progress, result, error_code, error_message, error, created_at, updated_at, fingerprint`

func scanCommand(sc interface{ Scan(...any) error }) (*commandRow, error) {
	var r commandRow
	var dl, cr, up int64
	if err := sc.Scan(&r.id, &r.line, &r.kind, &r.command, &r.state, &r.agentID, &dl, &r.detail, &r.progress, &r.result,
		&r.errCode, &r.errMessage, &r.errProto, &cr, &up, &r.fingerprint); err != nil {
		return nil, err
	}
	r.deadline, r.created, r.updated = time.Unix(0, dl), time.Unix(0, cr), time.Unix(0, up)
	return &r, nil
}

// insertCommand stores a new queued command with its blob, if any. When
// the id already exists nothing is changed (the id is the idempotency key)
// and created is false, with the stored command in prev.
func (st *store) insertCommand(ctx context.Context, r *commandRow, lineKey string, blob *pendingBlob) (created bool, prev *commandRow, err error) {
	needs := jsonList(r.needs)
	err = st.tx(ctx, func(tx *sql.Tx) error {
		created, prev = false, nil
		res, err := st.txExec(ctx, tx, sqlInsertCommand,
			r.id, r.line, lineKey, r.kind, r.command, stateQueued, r.deadline.UnixNano(), r.created.UnixNano(), r.created.UnixNano(), r.fingerprint, needs)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			prev, err = scanCommand(st.txQueryRow(ctx, tx, sqlCommand, r.id))
			return err
		}
		created = true
		if blob != nil {
			if err := insertBlob(ctx, tx, r.id, blob); err != nil {
				return err
			}
		}
		return st.announce(ctx, tx, wakeCommand, lineKey)
	})
	return created, prev, err
}

// command returns one command, or nil when the id is unknown.
func (st *store) command(ctx context.Context, id string) (*commandRow, error) {
	r, err := scanCommand(st.queryRow(ctx, sqlCommand, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// claimCommandsFn claims what to send to agentID on a stream: when redeliver
// is set, every unfinished command already assigned to it (the agent answers
// a repeat from its record, which is how a lost result comes back), then
// queued commands for its lines, oldest first, moved to dispatched, up to
// maxInFlight unfinished commands in all. Queued commands with a
// requirement among held (the agent's health cannot meet it now:
// routing.go) stay queued; redelivered ones go again whatever it says, as
// the agent already has them. Newly claimed rows hold only claimedCols
// (and their new state and agent); redelivered ones are whole.
//
// It is a write job (see store.tx); *claimed is set when it has run.
func (st *store) claimCommandsFn(ctx context.Context, agentID string, lineKeys, held []string, redeliver bool, maxInFlight int, now time.Time, claimed *[]*commandRow) func(*sql.Tx) error {
	keys, heldJSON := jsonList(lineKeys), jsonList(held)
	return func(tx *sql.Tx) error {
		var out []*commandRow
		defer func() { *claimed = out }()
		if redeliver {
			rows, err := st.txQuery(ctx, tx, sqlUnfinished, agentID, stateDispatched, stateAccepted, stateInProgress)
			if err != nil {
				return err
			}
			if out, err = collect(rows, func(rows *sql.Rows) (*commandRow, error) { return scanCommand(rows) }); err != nil {
				return err
			}
		}
		if len(lineKeys) == 0 {
			return nil
		}
		rows, err := st.txQuery(ctx, tx, st.d.claim, stateDispatched, agentID, now.UnixNano(), stateQueued,
			stateQueued, now.UnixNano(), keys, agentID, heldJSON,
			maxInFlight, agentID, stateDispatched, stateAccepted, stateInProgress)
		if err != nil {
			return err
		}
		type picked struct {
			r     *commandRow
			rowid int64
		}
		var took []picked
		for rows.Next() {
			r := &commandRow{state: stateDispatched, agentID: agentID}
			var p picked
			var created int64
			if err := rows.Scan(&r.id, &r.kind, &r.command, &created, &p.rowid); err != nil {
				rows.Close()
				return err
			}
			r.created, p.r = time.Unix(0, created), r
			took = append(took, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		// RETURNING promises no order: oldest first, as they were picked.
		slices.SortFunc(took, func(x, y picked) int {
			return cmp.Or(x.r.created.Compare(y.r.created), cmp.Compare(x.rowid, y.rowid))
		})
		for _, p := range took {
			out = append(out, p.r)
		}
		return nil
	}
}

// inFlight is the ids of the commands in flight to agentID: dispatched,
// accepted or in progress.
func (st *store) inFlight(ctx context.Context, agentID string) ([]string, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT id FROM commands WHERE agent_id = ? AND state IN (?, ?, ?)`,
		agentID, stateDispatched, stateAccepted, stateInProgress)
	if err != nil {
		return nil, err
	}
	return collect(rows, scanOne[string])
}

// claimedCols are what a claim returns of each command it took: what a
// stream sends and logs, and the order they were queued in (created_at,
// rowid). Not the whole row: a claim runs for every command submitted,
// and each column returned costs the SQLite driver allocations per
// statement.
const claimedCols = `id, kind, command, created_at, rowid`

// updateCommandFn applies a CommandUpdate from agentID: the state only moves
// forward (dispatched → accepted → in_progress), progress and detail are
// replaced when given.
//
// It is a write job (see store.tx); *changed is set when it has run.
func (st *store) updateCommandFn(ctx context.Context, id, agentID, toState string, progress []byte, detail string, now time.Time, changed *bool) func(*sql.Tx) error {
	var p any // NULL keeps the stored progress
	if progress != nil {
		p = progress
	}
	return func(tx *sql.Tx) error {
		res, err := st.txExec(ctx, tx, sqlUpdateCommand,
			toState, p, detail, detail, now.UnixNano(), id, agentID, stateDispatched, stateAccepted, stateInProgress)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		*changed = n == 1
		return err
	}
}

// finishCommandFn records the one final outcome of a command assigned to
// agentID. Final states never change, so a second result is ignored
// (*final stays nil). *final is the row as it was stored, for the calls
// waiting for it: final rows never change, so it stays the truth.
//
// It is a write job (see store.tx); *final is set when it has run.
func (st *store) finishCommandFn(ctx context.Context, id, agentID, state string, result []byte, errCode, errMessage string, errProto []byte, now time.Time, final **commandRow) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		*final = nil
		r, err := scanCommand(st.txQueryRow(ctx, tx, sqlFinishCommand,
			state, result, errCode, errMessage, errProto, now.UnixNano(), id, agentID, stateDispatched, stateAccepted, stateInProgress))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if blobKinds[r.kind] {
			if err := st.deleteBlobs(ctx, tx, id); err != nil {
				return err
			}
		}
		if err := st.announce(ctx, tx, wakeDone, id); err != nil {
			return err
		}
		*final = r
		return nil
	}
}

// nextDeadline is the earliest moment a command could expire, or false when
// nothing is pending.
func (st *store) nextDeadline(ctx context.Context, grace time.Duration) (time.Time, bool, error) {
	var a, b sql.NullInt64
	if err := st.db.QueryRowContext(ctx, `SELECT
		(SELECT MIN(deadline) FROM commands WHERE state IN (?, ?)),
		(SELECT MIN(deadline) FROM commands WHERE state IN (?, ?))`,
		stateQueued, stateDispatched, stateAccepted, stateInProgress).Scan(&a, &b); err != nil {
		return time.Time{}, false, err
	}
	var next int64
	ok := false
	if a.Valid {
		next, ok = a.Int64, true
	}
	if b.Valid {
		g := b.Int64 + int64(grace)
		if !ok || g < next {
			next, ok = g, true
		}
	}
	return time.Unix(0, next), ok, nil
}

// expiredCommand is a command the sweeper failed.
type expiredCommand struct {
	id, agentID, lastState, kind string
}

// expireBatch bounds the commands one sweep fails, so a backlog (an agent
// gone for a day) is many short transactions, not one long one: the
// sweeper comes back at once while deadlines are past (nextDeadline).
const expireBatch = 1000

// expireCommands fails every command whose deadline passed without a result:
// queued and dispatched ones at the deadline, accepted and in-progress ones
// after the grace period, at most expireBatch of them. errFor builds the
// stored error for a last state.
func (st *store) expireCommands(ctx context.Context, now time.Time, grace time.Duration, errFor func(lastState string) (code, msg string, proto []byte)) ([]expiredCommand, error) {
	var out []expiredCommand
	err := st.tx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `SELECT id, agent_id, state, kind FROM commands
			WHERE (state IN (?, ?) AND deadline <= ?) OR (state IN (?, ?) AND deadline <= ?) LIMIT ?`+st.d.skipLocked,
			stateQueued, stateDispatched, now.UnixNano(), stateAccepted, stateInProgress, now.Add(-grace).UnixNano(), expireBatch)
		if err != nil {
			return err
		}
		if out, err = collect(rows, func(rows *sql.Rows) (e expiredCommand, err error) {
			return e, rows.Scan(&e.id, &e.agentID, &e.lastState, &e.kind)
		}); err != nil {
			return err
		}
		freed := map[string]bool{}
		for _, e := range out {
			code, msg, p := errFor(e.lastState)
			if _, err := tx.ExecContext(ctx, `UPDATE commands SET state = ?, error_code = ?, error_message = ?, error = ?, updated_at = ? WHERE id = ? AND state = ?`,
				stateFailed, code, msg, p, now.UnixNano(), e.id, e.lastState); err != nil {
				return err
			}
			if blobKinds[e.kind] {
				if err := st.deleteBlobs(ctx, tx, e.id); err != nil {
					return err
				}
			}
			if err := st.announce(ctx, tx, wakeDone, e.id); err != nil {
				return err
			}
			if e.agentID != "" && !freed[e.agentID] {
				freed[e.agentID] = true
				if err := st.announce(ctx, tx, wakeFreed, e.agentID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return out, err
}

// jsonList is ss as one JSON array (never null): how a list is stored in a
// column, and passed to a statement with a fixed number of arguments
// (json_each on SQLite, pgInList on PostgreSQL).
func jsonList(ss []string) string {
	b, _ := json.Marshal(nonNil(ss)) // a []string always encodes
	return string(b)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
