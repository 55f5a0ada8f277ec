package chatdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// Options configure a Reader.
type Options struct {
	// Line is the account reported for rows that name none (old rows
	// without destination_caller_id or account).
	Line string
	// Home replaces a leading "~" in attachment paths; empty means the
	// current user's home directory. Messages stores paths relative to it.
	Home string
	// Logger receives reopen and decode warnings; nil means slog.Default().
	Logger *slog.Logger
}

// Reader is a read-only view of a chat.db. It never writes: the connection
// string asks SQLite for mode=ro and query_only, so even a bug in this
// package cannot modify the user's messages. It is safe for concurrent use.
//
// A Reader watches the identity (device and inode) of chat.db and chat.db-wal
// and reopens its connections when either changes: a connection holding the
// file descriptor of a deleted WAL would otherwise fail or read nothing new.
type Reader struct {
	path string
	opts Options
	log  *slog.Logger

	mu     sync.RWMutex // guards everything below; queries hold it shared
	db     *sql.DB
	dv     *sql.Conn  // one fixed connection for the tailer's snapshots (PRAGMA data_version is per connection)
	stmts  *stmtCache // the snapshots' statements, for this db
	schema *schema
	dbID   string
	walID  string
	gen    uint64 // incremented on every reopen
	closed bool
}

// ErrNotFound is returned (wrapped) when a looked-up message does not exist.
var ErrNotFound = errors.New("chatdb: not found")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("chatdb: reader is closed")

// readerDSN is the read-only connection string. busy_timeout rides out a
// checkpoint in progress; query_only makes any write fail even if the
// file were writable.
func readerDSN(path string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"
}

// Open opens the chat.db at path read-only and detects which columns this
// macOS version's schema has. The file must exist: Messages creates it, the
// agent never does.
func Open(path string, opts Options) (*Reader, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Home == "" {
		opts.Home, _ = os.UserHomeDir()
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("chatdb: %w", err)
	}
	r := &Reader{path: path, opts: opts, log: opts.Logger}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.openLocked(context.Background()); err != nil {
		return nil, err
	}
	return r, nil
}

// openLocked (re)opens the pool and the data_version connection.
func (r *Reader) openLocked(ctx context.Context) error {
	dbID, err := fileID(r.path)
	if err != nil {
		return fmt.Errorf("chatdb: stat %s: %w", r.path, err)
	}
	if dbID == "" {
		return fmt.Errorf("chatdb: %s: %w", r.path, os.ErrNotExist)
	}
	walID, _ := fileID(r.path + "-wal")
	db, err := sql.Open("sqlite", readerDSN(r.path))
	if err != nil {
		return fmt.Errorf("chatdb: open %s: %w", r.path, err)
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	sc, err := loadSchema(ctx, db)
	if err != nil {
		db.Close()
		return err
	}
	dv, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return fmt.Errorf("chatdb: open %s: %w", r.path, err)
	}
	if r.stmts != nil {
		r.stmts.close()
	}
	if r.dv != nil {
		r.dv.Close()
	}
	if r.db != nil {
		r.db.Close()
	}
	sc.dbID = dbID
	r.db, r.dv, r.schema, r.dbID, r.walID = db, dv, sc, dbID, walID
	r.stmts = newStmtCache(db)
	r.gen++
	return nil
}

// Close closes the Reader's connections.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.stmts.close()
	r.dv.Close()
	return r.db.Close()
}

// Path is the chat.db file the Reader reads.
func (r *Reader) Path() string { return r.path }

// Identity names the database file currently open (device and inode). It
// changes when the file is replaced wholesale.
func (r *Reader) Identity() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.dbID
}

// HasColumn reports whether table has column in this chat.db: older macOS
// versions lack some (date_edited, associated_message_emoji, ...).
func (r *Reader) HasColumn(table, column string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.schema.has(table, column)
}

// Refresh compares the files on disk with the ones the Reader has open and
// reopens when chat.db or chat.db-wal was replaced (new inode). It reports
// whether chat.db itself was replaced, which means every ROWID may now name
// a different row.
func (r *Reader) Refresh(ctx context.Context) (replaced bool, err error) {
	dbID, err := fileID(r.path)
	if err != nil {
		return false, fmt.Errorf("chatdb: stat %s: %w", r.path, err)
	}
	walID, _ := fileID(r.path + "-wal")
	r.mu.RLock()
	same := dbID == r.dbID && (walID == r.walID || r.walID == "" || walID == "")
	closed := r.closed
	r.mu.RUnlock()
	if closed {
		return false, ErrClosed
	}
	if same {
		if walID != "" {
			r.mu.Lock()
			if r.walID == "" {
				r.walID = walID
			}
			r.mu.Unlock()
		}
		return false, nil
	}
	if dbID == "" {
		return false, fmt.Errorf("chatdb: %s: %w", r.path, os.ErrNotExist)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false, ErrClosed
	}
	if dbID == r.dbID && (walID == r.walID || walID == "") {
		return false, nil // another caller reopened meanwhile
	}
	old := r.dbID
	r.log.Info("chatdb: reopening after file change", "path", r.path, "db_replaced", old != dbID)
	if err := r.openLocked(ctx); err != nil {
		return false, err
	}
	return old != dbID, nil
}

// reopen forces a reopen after an I/O error that suggests the open file
// descriptors are stale.
func (r *Reader) reopen(ctx context.Context, gen uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.gen != gen {
		return nil // someone else already reopened
	}
	return r.openLocked(ctx)
}

// staleFileError reports whether err looks like SQLite reading a file that
// was replaced underneath it (short read, I/O error, corruption seen through
// a stale WAL), which a reopen cures.
func staleFileError(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, m := range []string{"disk I/O error", "malformed", "SQLITE_IOERR", "SQLITE_CORRUPT", "no such table", "readonly database", "unable to open"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// with runs f with the current pool and schema, reopening and retrying once
// when f fails with an error a stale file descriptor explains.
func (r *Reader) with(ctx context.Context, f func(db *sql.DB, sc *schema) error) error {
	return r.current(ctx, func(c readerConns) error { return f(c.db, c.schema) })
}

// readerConns is what the Reader holds open for one generation of chat.db.
type readerConns struct {
	db     *sql.DB
	dv     *sql.Conn
	stmts  *stmtCache
	schema *schema
	gen    uint64
}

// current runs f with the connections of the current generation, under
// the shared lock, and, when f fails with an error a stale file descriptor
// explains (chat.db or its WAL replaced), reopens and runs it once more.
// with and snapshot are its two uses.
func (r *Reader) current(ctx context.Context, f func(c readerConns) error) error {
	for attempt := 0; ; attempt++ {
		r.mu.RLock()
		if r.closed {
			r.mu.RUnlock()
			return ErrClosed
		}
		c := readerConns{db: r.db, dv: r.dv, stmts: r.stmts, schema: r.schema, gen: r.gen}
		err := f(c)
		r.mu.RUnlock()
		if attempt > 0 || !staleFileError(err) || ctx.Err() != nil {
			return err
		}
		r.log.Warn("chatdb: query failed, reopening", "err", err)
		if rerr := r.reopen(ctx, c.gen); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
}

// dataVersion identifies a snapshot of chat.db as the Reader's fixed
// connection saw it: PRAGMA data_version changes whenever another
// connection (Messages) commits, and is only comparable on one connection,
// hence the generation of the connections it was read on.
type dataVersion struct {
	gen uint64
	v   int64
}

// snapshot runs f in one read transaction on the Reader's fixed connection,
// with PRAGMA data_version read first inside it. That read starts the
// transaction, so v belongs to the snapshot every query of f sees: a commit
// that lands after it is not in f's results and changes the value the next
// snapshot reads. Like with, it reopens and runs f again once when f fails
// with an error a stale file descriptor explains. Callers must not run two
// snapshots at once (the connection is one).
func (r *Reader) snapshot(ctx context.Context, f func(tx querier, sc *schema, v dataVersion) error) error {
	return r.current(ctx, func(c readerConns) error {
		tx, err := c.dv.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("chatdb: begin read: %w", err)
		}
		defer tx.Rollback()
		q := snapTx{tx: tx, stmts: c.stmts}
		v := dataVersion{gen: c.gen}
		if err := q.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v.v); err != nil {
			return fmt.Errorf("chatdb: data_version: %w", err)
		}
		return f(q, c.schema, v)
	})
}

// schema records the columns of the tables the reader uses, and the
// identity of the file they were read from: one consistent view per open,
// passed to queries so they never take the Reader's lock again.
type schema struct {
	cols map[string]map[string]bool
	dbID string
}

func (s *schema) has(table, col string) bool { return s.cols[table][strings.ToLower(col)] }

// col returns "alias.col" when the column exists and fallback otherwise, so
// one query text works on every macOS version.
func (s *schema) col(table, alias, col, fallback string) string {
	if s.has(table, col) {
		return alias + "." + col
	}
	return fallback
}

func loadSchema(ctx context.Context, db *sql.DB) (*schema, error) {
	s := &schema{cols: map[string]map[string]bool{}}
	for _, t := range []string{"message", "chat", "handle", "attachment", "chat_message_join", "message_attachment_join", "chat_handle_join"} {
		rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, t)
		if err != nil {
			return nil, fmt.Errorf("chatdb: read schema of %s: %w", t, err)
		}
		m := map[string]bool{}
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return nil, err
			}
			m[strings.ToLower(name)] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		s.cols[t] = m
	}
	for _, need := range []string{"message", "chat", "chat_message_join"} {
		if len(s.cols[need]) == 0 {
			return nil, fmt.Errorf("chatdb: not a Messages database: no %s table", need)
		}
	}
	return s, nil
}
