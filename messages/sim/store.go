// Package sim is a simulated Apple Messages: a stand-in, not a mock. It keeps a
// real chat.db (Apple's schema, WAL mode) and writes rows the way Messages
// does, so that everything downstream (the chatdb reader and watcher, the
// agent, the relay) runs for real on Linux, in CI and in demos.
//
// The package has two layers: Store writes chat.db rows as Messages does
// (finding chats, sending with Apple's servers answering, in-place updates)
// and injects the file-level faults a real Mac produces; Remote plays the
// people on the other end (they reply, react and read). Messages bundles the
// two. The agent reaches it through the simulated private-API helper
// (messages/simhelper), as it reaches Messages on a Mac through the real one.
package sim

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/pkg/wallclock"
)

// schemaSQL is Apple's chat.db schema, copied from the project's reference so
// that a simulated chat.db has exactly the tables, columns and indexes a Mac
// has (see the header of schema.sql).
//
//go:embed schema.sql
var schemaSQL string

// Schema returns the SQL that creates a chat.db as Messages does on macOS 26.
// Tests use it to build variants (older macOS versions lack some columns).
func Schema() string { return schemaSQL }

// DefaultLineNumber is the phone number the simulated Mac's iMessage account
// uses unless told otherwise: a reserved 555 number that can never reach a
// real person.
const DefaultLineNumber = "+15550000001"

// Store writes a chat.db the way Messages does. It is safe for concurrent use:
// every write holds one lock and runs in its own transaction, as Messages'
// single writer does, so readers see the same commit pattern as on a Mac
// (insert first, in-place updates later, each its own commit).
type Store struct {
	path string
	opts storeOptions

	mu     sync.Mutex // serialises writes and guards db, rnd, closed
	db     *sql.DB
	rnd    *rand.Rand
	closed bool

	quit  chan struct{}  // closed by Close: pending sends stop
	sends sync.WaitGroup // sends the servers are still answering
}

type storeOptions struct {
	fillText bool
	clock    func() time.Time
	seed     uint64
	line     string
}

// StoreOption adjusts how a Store writes rows.
type StoreOption func(*storeOptions)

// WithText makes the Store also fill message.text, as macOS before 13 did.
// By default text is NULL and the body lives only in attributedBody, which is
// what current Macs write and what a reader must cope with.
func WithText(fill bool) StoreOption { return func(o *storeOptions) { o.fillText = fill } }

// WithClock sets the clock that dates rows, so tests can produce old rows,
// exact timestamps and reproducible files.
func WithClock(now func() time.Time) StoreOption { return func(o *storeOptions) { o.clock = now } }

// WithSeed seeds the generator of GUIDs and group chat names, so two runs with
// the same seed and inputs write the same rows.
func WithSeed(seed uint64) StoreOption { return func(o *storeOptions) { o.seed = seed } }

// WithLine sets the account (phone number or email) whose messages the Store
// writes: message.account, destination_caller_id and chat.account_login.
func WithLine(line string) StoreOption { return func(o *storeOptions) { o.line = line } }

// Create opens the chat.db at path, creating it from Apple's schema in WAL
// mode when it does not exist yet. The directory must exist.
func Create(path string, opts ...StoreOption) (*Store, error) {
	o := storeOptions{clock: wallclock.Now, line: DefaultLineNumber, seed: uint64(time.Now().UnixNano())}
	for _, f := range opts {
		f(&o)
	}
	if o.clock == nil {
		o.clock = wallclock.Now
	}
	if o.line == "" {
		o.line = DefaultLineNumber
	}
	s := &Store{path: path, opts: o, rnd: rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15)), quit: make(chan struct{})}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// writerDSN is the writer's connection string: WAL like Messages, a busy
// timeout so a reader's checkpoint never fails a write, and immediate
// transactions so two writers queue instead of deadlocking.
func writerDSN(path string) string {
	return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

// open (re)connects the writer and creates the schema on an empty file.
func (s *Store) open() error {
	// chat.db holds message text: create the file private before SQLite
	// does (its -wal and -shm files get the database file's mode).
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sim: create %s: %w", s.path, err)
	}
	f.Close()
	db, err := sql.Open("sqlite", writerDSN(s.path))
	if err != nil {
		return fmt.Errorf("sim: open %s: %w", s.path, err)
	}
	db.SetMaxOpenConns(1) // one writer connection, like Messages
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type='table' AND name='message'`).Scan(&n); err != nil {
		db.Close()
		return fmt.Errorf("sim: open %s: %w", s.path, err)
	}
	if n == 0 {
		if _, err := db.Exec(schemaSQL); err != nil {
			db.Close()
			return fmt.Errorf("sim: create schema in %s: %w", s.path, err)
		}
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || !strings.EqualFold(mode, "wal") {
		db.Close()
		return fmt.Errorf("sim: %s is not in WAL mode (%q): %v", s.path, mode, err)
	}
	s.db = db
	return nil
}

// Path is the chat.db file the Store writes.
func (s *Store) Path() string { return s.path }

// Line is the account the Store writes as (phone number or email).
func (s *Store) Line() string { return s.opts.line }

// Now is the Store's clock, the one that dates rows.
func (s *Store) Now() time.Time { return s.opts.clock() }

// Close stops the sends still waiting for the servers (their rows stay as
// they are), waits for them and closes the writer. As with Messages
// quitting, SQLite checkpoints and removes the WAL if no other connection
// has the database open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.quit)
	s.mu.Unlock()
	s.sends.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

var errClosed = errors.New("sim: store is closed")

// tx runs f in one write transaction under the Store's lock.
func (s *Store) tx(ctx context.Context, f func(tx *wtx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Messages does not drop a write because another process holds
	// chat.db's lock longer than SQLite's busy timeout: it tries again.
	deadline := time.Now().Add(busyRetryFor)
	for {
		if s.closed {
			return errClosed
		}
		err := s.tx1(ctx, f)
		if err == nil || !isBusy(err) || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// busyRetryFor bounds how long a write is tried again while chat.db is
// locked by someone else.
const busyRetryFor = 30 * time.Second

// isBusy reports whether err is SQLite's "database is locked".
func isBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

// tx1 is one attempt of tx; s.mu is held.
func (s *Store) tx1(ctx context.Context, f func(tx *wtx) error) error {
	stx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sim: begin: %w", err)
	}
	tx := &wtx{tx: stx, attachments: s.AttachmentsDir()}
	err = f(tx)
	tx.close()
	if err != nil {
		stx.Rollback()
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("sim: commit: %w", err)
	}
	return nil
}

// newGUID returns an uppercase UUID (version 4 layout) as Messages writes
// message and attachment GUIDs. Callers hold s.mu.
func (s *Store) newGUID() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := s.rnd.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]))
}

// accountOf spells a line as message.account does: "p:+1555..." for a phone
// number, "e:addr" for an email address.
func accountOf(line string) string {
	if strings.Contains(line, "@") {
		return "e:" + line
	}
	return "p:" + line
}

// apple converts t to chat.db's nanoseconds since 2001.
func apple(t time.Time) int64 { return chatdb.ToAppleTime(t) }
