package agent

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver: darwin cross-compiles without cgo

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/pkg/groupcommit"
	"github.com/line-agent/line-agent/pkg/walcheckpoint"
	"github.com/line-agent/line-agent/pkg/wallclock"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Journal is the agent's durable memory, state.db in the data directory. It
// keeps the promises that outlive a process: a command id is recorded before
// it runs, so a redelivered id is answered from the record instead of run
// twice (at most once), and every event from chat.db sits in the outbox with
// its sequence until the relay acknowledges it (nothing lost). chat.db itself
// is the backlog: the outbox holds only a bounded window, and the reader's
// cursor is stored in the same transaction as the events it produced.
type Journal struct {
	db  *sql.DB
	now func() time.Time
	// ckpt copies state.db's WAL into it off the commit path (see
	// pkg/walcheckpoint).
	ckpt *walcheckpoint.Checkpointer

	// w is the one writer of state.db: it commits whatever writes are
	// waiting in one transaction (group commit), so durability costs one
	// fsync per batch, not per command.
	w *groupcommit.Writer

	// stmts holds the hot statements prepared once (prepare): pure-Go
	// SQLite spends a fifth of a busy agent's time parsing SQL otherwise.
	// Read-only after OpenJournal.
	stmts map[string]*sql.Stmt

	// maxOutbox bounds the events kept unacknowledged; Commit waits beyond it.
	maxOutbox int

	// epoch names this state.db: a new one is drawn when the file is
	// created, so the relay can tell a journal that numbers its events from 1
	// again from one that replays. created is set when OpenJournal made the
	// file.
	epoch   string
	created bool

	// marks finds the cursors whose events the relay acknowledged, for
	// the session to pass on (cursormark.go).
	marks cursorMarks

	// obs hears acknowledged events and settled commands (metrics.go);
	// nil hears nothing. Set before the journal is used, then read-only.
	obs journalObserver

	mu sync.Mutex
	// outboxLen is the count of rows in outbox; guarded by mu.
	outboxLen int
	// changed is closed and replaced whenever the outbox gains or loses rows;
	// guarded by mu.
	changed chan struct{}
	// writeErr is the error of the last group of writes that failed, nil
	// once a group succeeds again; writeErrSince is when the failures began.
	// Both guarded by mu.
	writeErr      error
	writeErrSince time.Time

	// retention is how long a finished command's record is kept
	// (journal_prune.go); pruneKeep records before the oldest unfinished
	// one are never pruned. Both read-only once the journal is used.
	retention time.Duration
	pruneKeep int64
	// pruning is set while a prune turn is queued, pruneNext is when the
	// next is due, pruneFrom the rowid it starts after; all guarded by mu.
	pruning   bool
	pruneNext time.Time
	pruneFrom int64
}

// Command states in the journal. A command is accepted when it is queued,
// running from the moment just before the driver is called, and done with
// its result. After a crash an accepted command certainly did not reach
// Messages (it is forgotten, and the relay's redelivery runs it); a running
// one may have.
const (
	stateAccepted = "accepted"
	stateRunning  = "running"
	stateDone     = "done"
)

const journalSchema = `
CREATE TABLE IF NOT EXISTS commands (
	id TEXT PRIMARY KEY,
	line TEXT NOT NULL,
	kind TEXT NOT NULL,
	chat TEXT NOT NULL,
	state TEXT NOT NULL,
	result BLOB,
	command BLOB,
	checkpoint BLOB,
	received_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	chatdb_mark INTEGER,
	deadline INTEGER
);
CREATE INDEX IF NOT EXISTS commands_state ON commands(state);
CREATE TABLE IF NOT EXISTS outbox (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	key TEXT NOT NULL UNIQUE,
	event BLOB NOT NULL,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB);
`

// OpenJournal opens (or creates) state.db in dir. maxOutbox bounds the
// unacknowledged events kept; zero means 10,000.
func OpenJournal(dir string, maxOutbox int) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	path := filepath.Join(dir, "state.db")
	created, err := createPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	// synchronous(FULL): a recorded command id must survive a power cut, or a
	// redelivered command could run twice.
	// The WAL is copied into state.db in the background (ckpt), not by the
	// commit that fills it.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_pragma=" + walcheckpoint.Pragma() + "&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	// One writer (the goroutine below) and a few readers: WAL lets reads
	// proceed while a batch commits.
	db.SetMaxOpenConns(4)
	if _, err := db.Exec(journalSchema + quotaSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: create schema in %s: %w", path, err)
	}
	if err := addColumns(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: upgrade %s: %w", path, err)
	}
	if maxOutbox <= 0 {
		maxOutbox = 10000
	}
	epoch, err := loadEpoch(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: epoch in %s: %w", path, err)
	}
	j := &Journal{db: db, now: wallclock.Now, maxOutbox: maxOutbox, changed: make(chan struct{}), epoch: epoch, created: created,
		retention: DefaultJournalRetention, pruneKeep: claimedLookback}
	if err := db.QueryRow(`SELECT count(*) FROM outbox`).Scan(&j.outboxLen); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: %w", err)
	}
	// Health first: noteWrite runs before the writes of a batch are told
	// their outcome, so a caller told of its failure may look at it at once.
	if err := j.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: prepare statements: %w", err)
	}
	if err := j.loadMarks(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	j.ckpt = walcheckpoint.Start(db, walcheckpoint.Gap)
	j.w = groupcommit.New(db, groupcommit.Options{MaxBatch: maxGroup, AfterBatch: func(err error) {
		j.noteWrite(err)
		j.ckpt.Wrote(err)
	}})
	return j, nil
}

// createPrivate makes sure path exists with mode 0600 before SQLite opens it
// (SQLite gives its -wal and -shm files the database file's mode) and makes
// an existing one, and its -wal and -shm, private too: state.db holds
// message text and command payloads. created reports that the file did not
// exist or was empty, which for state.db means a new journal.
func createPrivate(path string) (created bool, err error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		created = true
	case err != nil:
		return false, err
	default:
		created = fi.Size() == 0
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, err
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() != 0o600 {
			if err := os.Chmod(p, 0o600); err != nil {
				return false, err
			}
		}
	}
	return created, nil
}

// addColumns gives a state.db written by an older agent the columns added
// since: chatdb_mark (its running commands keep a NULL mark and are
// reconciled by the wall clock, as they were) and deadline (its records
// keep a NULL one and answer any command of their id, as they did).
func addColumns(db *sql.DB) error {
	for _, col := range []string{"chatdb_mark", "deadline"} {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM pragma_table_info('commands') WHERE name = ?`, col).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		if _, err := db.Exec(`ALTER TABLE commands ADD COLUMN ` + col + ` INTEGER`); err != nil {
			return err
		}
	}
	return nil
}

// loadEpoch returns the journal's epoch, drawing and storing a new one when
// there is none (a new state.db, or one an agent without epochs wrote).
func loadEpoch(db *sql.DB) (string, error) {
	var epoch string
	err := db.QueryRow(`SELECT CAST(v AS TEXT) FROM kv WHERE k = 'journal_epoch'`).Scan(&epoch)
	if err == nil {
		return epoch, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	epoch = hex.EncodeToString(b)
	if _, err := db.Exec(`INSERT INTO kv(k, v) VALUES('journal_epoch', ?)`, epoch); err != nil {
		return "", err
	}
	return epoch, nil
}

// Epoch names this state.db. It is drawn at random when the journal is
// created and never changes after: the relay compares it in Hello with the
// one it saw last, and a different one means this agent's event sequences
// start from 1 again.
func (j *Journal) Epoch() string { return j.epoch }

// Created reports whether OpenJournal created state.db (it was missing or
// empty): every command record and unacknowledged event of an earlier
// journal, if there was one, is gone.
func (j *Journal) Created() bool { return j.created }

// Close commits the writes already queued, stops the writer and closes
// state.db.
func (j *Journal) Close() error {
	j.w.Close()
	j.ckpt.Close()
	return j.db.Close()
}

// maxGroup bounds the writes committed together.
const maxGroup = 256

// ErrJournalClosed is returned for writes after Close.
var ErrJournalClosed = fmt.Errorf("journal: %w", groupcommit.ErrClosed)

// closedErr names a write refused after Close as the journal's.
func closedErr(err error) error {
	if errors.Is(err, groupcommit.ErrClosed) {
		return ErrJournalClosed
	}
	return err
}

// writeAsync queues apply for the next group transaction and calls done (if
// not nil) from the writer once it is durable or failed: done must be quick
// and must not wait for another journal write.
func (j *Journal) writeAsync(apply func(tx *sql.Tx) error, done func(error)) {
	job := groupcommit.NewJob(context.Background(), faulty(apply))
	if done != nil {
		job.Then(func(err error) { done(closedErr(err)) })
	}
	j.w.Queue(job) // after Close, done hears ErrJournalClosed
}

// write runs apply inside the next group transaction, in a savepoint of its
// own, and returns once that transaction is durable. apply may run more than
// once (when another write aborted the transaction) and sets what it reports
// afresh each time. write takes no ctx and waits for the commit: a caller
// told "failed" about a write that then lands could run a command twice.
func (j *Journal) write(apply func(tx *sql.Tx) error) error {
	return closedErr(j.w.Do(context.Background(), faulty(apply)))
}

// noteWrite keeps the last write failure for health, until a group of
// writes succeeds again.
func (j *Journal) noteWrite(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err == nil {
		j.writeErr = nil
		return
	}
	if j.writeErr == nil {
		j.writeErrSince = j.now()
	}
	j.writeErr = err
}

// WriteErr returns the error of the last failed write, and since when writes
// have been failing, or nil once a write succeeded again.
func (j *Journal) WriteErr() (error, time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.writeErr, j.writeErrSince
}

// CommandRecord is what the journal knows of a command id.
type CommandRecord struct {
	ID     string
	State  string
	Result *linev1.CommandResult
	// deadline is the recorded command's deadline (unix ns), NULL for a
	// record an older agent wrote or a command without one.
	deadline sql.NullInt64
}

// ReusedBy reports whether cmd is another command than the one recorded
// under its id: the same id with another deadline. The relay redelivers a
// command unchanged, deadline included, while it is unfinished; a command
// with a recorded id and a new deadline was submitted again after the
// relay forgot the first (its retention), and answering it from the record
// would claim the earlier command's outcome for it.
func (r *CommandRecord) ReusedBy(cmd *linev1.Command) bool {
	d := deadlineOf(cmd)
	return r.deadline.Valid && d.Valid && r.deadline.Int64 != d.Int64
}

// deadlineOf is cmd's deadline as the journal keeps it.
func deadlineOf(cmd *linev1.Command) sql.NullInt64 {
	if dl := cmd.GetDeadline(); dl != nil {
		return sql.NullInt64{Int64: dl.AsTime().UnixNano(), Valid: true}
	}
	return sql.NullInt64{}
}

// Begin records cmd as accepted unless its id is already known. It returns
// the existing record when there is one (the caller answers from it and does
// not run the command again), or nil when the command is new and now
// recorded. Start marks it running before the driver is called.
func (j *Journal) Begin(ctx context.Context, cmd *linev1.Command) (*CommandRecord, error) {
	recs, err := j.BeginMany(ctx, []*linev1.Command{cmd}, false, 0)
	if err != nil {
		return nil, err
	}
	return recs[0], nil
}

// BeginMany is Begin for several commands in one write: the dispatcher
// records every command waiting in a chat's queue together.
//
// With startFirst, cmds[0] is recorded running, not accepted, with mark
// (as Start records it): the caller is about to hand it to the driver (it
// holds the slot to run it), so the one write does both and the command's
// own Start write is saved.
func (j *Journal) BeginMany(ctx context.Context, cmds []*linev1.Command, startFirst bool, mark int64) ([]*CommandRecord, error) {
	now := j.now().UnixNano()
	// Each command is kept so that one interrupted mid-way can be resumed
	// after a restart (see SettleInterrupted); attachments make it large, so
	// it is dropped once the command finishes.
	blobs := make([][]byte, len(cmds))
	for i, cmd := range cmds {
		b, err := proto.Marshal(cmd)
		if err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		blobs[i] = b
	}
	recs := make([]*CommandRecord, len(cmds))
	err := j.write(func(tx *sql.Tx) error {
		for i, cmd := range cmds {
			recs[i] = nil
			state, m := stateAccepted, sql.NullInt64{}
			if i == 0 && startFirst {
				state, m = stateRunning, markValue(mark)
			}
			res, err := j.exec(tx, sqlRecordCommand,
				cmd.GetId(), cmd.GetLine(), command.KindName(cmd), chatKey(cmd), state, blobs[i], now, now, m, deadlineOf(cmd))
			if err != nil {
				return fmt.Errorf("record command %q: %w", cmd.GetId(), err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				continue
			}
			rec, err := lookup(tx, cmd.GetId())
			if err == nil && rec == nil {
				err = errors.New("record vanished")
			}
			if err != nil {
				return fmt.Errorf("record command %q: %w", cmd.GetId(), err)
			}
			recs[i] = rec
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return recs, nil
}

// Lookup returns the record of a command id, or nil if it is unknown.
func (j *Journal) Lookup(ctx context.Context, id string) (*CommandRecord, error) {
	rec, err := lookup(j.db, id)
	if err != nil {
		return nil, fmt.Errorf("journal: look up %q: %w", id, err)
	}
	return rec, nil
}

type queryRower interface {
	QueryRow(query string, args ...any) *sql.Row
}

func lookup(q queryRower, id string) (*CommandRecord, error) {
	var state string
	var blob []byte
	var deadline sql.NullInt64
	err := q.QueryRow(`SELECT state, result, deadline FROM commands WHERE id = ?`, id).Scan(&state, &blob, &deadline)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rec := &CommandRecord{ID: id, State: state, deadline: deadline}
	if blob != nil {
		rec.Result = &linev1.CommandResult{}
		if err := proto.Unmarshal(blob, rec.Result); err != nil {
			return nil, fmt.Errorf("result of %q: %w", id, err)
		}
	}
	return rec, nil
}

// Finish records the final result of a command.
func (j *Journal) Finish(ctx context.Context, res *linev1.CommandResult) error {
	blob, err := proto.Marshal(res)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	now := j.now().UnixNano()
	err = j.write(func(tx *sql.Tx) error {
		_, err := j.exec(tx, sqlFinishCommand,
			stateDone, blob, now, res.GetCommandId())
		return err
	})
	if err != nil {
		return fmt.Errorf("journal: finish %q: %w", res.GetCommandId(), err)
	}
	j.maybePrune()
	return nil
}

// Settle is Finish for a command an earlier process left running, decided
// after the restart (never run again), and counted as settled in metrics.
func (j *Journal) Settle(ctx context.Context, res *linev1.CommandResult) error {
	if err := j.Finish(ctx, res); err != nil {
		return err
	}
	if j.obs != nil {
		j.obs.CommandSettled(resultName(res))
	}
	return nil
}

// FinishAsync is Finish without the wait: done is called once the result is
// durable. The dispatcher sends the result meanwhile (the relay keeps the
// first final result it gets, so a crash before the commit cannot make it
// tell two stories) and answers a redelivery from memory until then.
func (j *Journal) FinishAsync(res *linev1.CommandResult, done func(error)) {
	blob, err := proto.Marshal(res)
	if err != nil {
		done(fmt.Errorf("journal: %w", err))
		return
	}
	now := j.now().UnixNano()
	j.writeAsync(func(tx *sql.Tx) error {
		_, err := j.exec(tx, sqlFinishCommand,
			stateDone, blob, now, res.GetCommandId())
		return err
	}, done)
	j.maybePrune()
}

// Record stores a command that was answered without running (rejected input,
// misrouted, unsupported) together with its result, so that a repeat of the
// id gets the same answer. An id already known keeps its first record.
func (j *Journal) Record(ctx context.Context, cmd *linev1.Command, res *linev1.CommandResult) error {
	blob, err := proto.Marshal(res)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	now := j.now().UnixNano()
	err = j.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO commands(id, line, kind, chat, state, result, received_at, updated_at, deadline)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`,
			cmd.GetId(), cmd.GetLine(), command.KindName(cmd), chatKey(cmd), stateDone, blob, now, now, deadlineOf(cmd))
		return err
	})
	if err != nil {
		return fmt.Errorf("journal: record %q: %w", cmd.GetId(), err)
	}
	j.maybePrune()
	return nil
}

// Start marks an accepted command running: from now on it may reach
// Messages, so a crash settles it IN_DOUBT instead of forgetting it. mark
// is chat.db's newest message ROWID, read just before (negative: unknown): after a
// crash, the rows above it are where the command's trace may lie, whatever
// the wall clock did meanwhile (docs/reliability.md). It returns once that
// is durable; the caller calls the driver only after a nil error. Writes of
// several chats' runners share a commit.
func (j *Journal) Start(id string, mark int64) error {
	now := j.now().UnixNano()
	var n int64
	err := j.write(func(tx *sql.Tx) error {
		res, err := j.exec(tx, sqlStartCommand, stateRunning, now, markValue(mark), id, stateAccepted)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err == nil && n != 1 {
		err = errors.New("no accepted record")
	}
	if err != nil {
		return fmt.Errorf("journal: start %q: %w", id, err)
	}
	return nil
}

// Forget removes the record of a command that was accepted but never
// started (the agent stopped first), so that the relay's redelivery runs it
// instead of getting IN_DOUBT for something that certainly did not happen.
func (j *Journal) Forget(ctx context.Context, id string) error {
	if err := j.write(func(tx *sql.Tx) error {
		// running too: the head of a batch is recorded running before the
		// runner calls the driver, and the caller knows the driver was not.
		_, err := tx.Exec(`DELETE FROM commands WHERE id = ? AND state IN (?, ?)`, id, stateAccepted, stateRunning)
		return err
	}); err != nil {
		return fmt.Errorf("journal: forget %q: %w", id, err)
	}
	return nil
}

// ForgetUnstarted removes every command an earlier process accepted but
// never started (it was killed first) and returns their ids: they certainly
// did not reach Messages, so the relay's redelivery must run them rather
// than hear IN_DOUBT. Call it at start, before commands arrive.
func (j *Journal) ForgetUnstarted(ctx context.Context) ([]string, error) {
	var exists int
	if err := j.db.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM commands WHERE state = ?)`, stateAccepted).Scan(&exists); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if exists == 0 {
		return nil, nil
	}
	var ids []string
	err := j.write(func(tx *sql.Tx) error {
		ids = ids[:0]
		rows, err := tx.Query(`DELETE FROM commands WHERE state = ? RETURNING id`, stateAccepted)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("journal: forget unstarted commands: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// SaveCheckpoint records how far a running command got, so that a restart
// can resume it instead of settling it IN_DOUBT.
func (j *Journal) SaveCheckpoint(id string, checkpoint []byte) error {
	now := j.now().UnixNano()
	err := j.write(func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE commands SET checkpoint = ?, updated_at = ? WHERE id = ? AND state = ?`, checkpoint, now, id, stateRunning)
		return err
	})
	if err != nil {
		return fmt.Errorf("journal: checkpoint %q: %w", id, err)
	}
	return nil
}

// Interrupted is a command an earlier process left running, with the
// checkpoint it saved (nil if none).
type Interrupted struct {
	Command    *linev1.Command
	Checkpoint []byte
}

// SettleInterrupted deals with every command an earlier process left
// unfinished. Those it accepted but never started are forgotten (see
// ForgetUnstarted). Of those it started, the ones that saved a checkpoint
// and that resumable accepts are returned to be resumed. The others get the
// result IN_DOUBT: they may have reached Messages before the agent stopped,
// and running them again could send a message twice.
func (j *Journal) SettleInterrupted(ctx context.Context, resumable func(*linev1.Command) bool) (settled []string, resume []Interrupted, err error) {
	if _, err := j.ForgetUnstarted(ctx); err != nil {
		return nil, nil, err
	}
	rows, err := j.db.QueryContext(ctx, `SELECT id, command, checkpoint FROM commands WHERE state = ?`, stateRunning)
	if err != nil {
		return nil, nil, fmt.Errorf("journal: %w", err)
	}
	type running struct {
		id        string
		cmd, ckpt []byte
	}
	var all []running
	for rows.Next() {
		var r running
		if err := rows.Scan(&r.id, &r.cmd, &r.ckpt); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("journal: %w", err)
		}
		all = append(all, r)
	}
	rows.Close()
	for _, r := range all {
		if r.ckpt != nil && r.cmd != nil && resumable != nil {
			cmd := &linev1.Command{}
			if err := proto.Unmarshal(r.cmd, cmd); err == nil && resumable(cmd) {
				resume = append(resume, Interrupted{Command: cmd, Checkpoint: r.ckpt})
				continue
			}
		}
		res := &linev1.CommandResult{
			CommandId:  r.id,
			FinishedAt: timestamppb.New(j.now()),
			Outcome: &linev1.CommandResult_Error{Error: (&command.Error{
				Code: linev1.ErrorCode_ERROR_CODE_IN_DOUBT,
				Msg:  "the agent stopped while this command ran; it may or may not have reached Messages and was not run again",
			}).Proto()},
		}
		if err := j.Settle(ctx, res); err != nil {
			return nil, nil, err
		}
		settled = append(settled, r.id)
	}
	return settled, resume, nil
}

// Commit appends events to the outbox with fresh sequences and stores the
// chat.db cursor after them, in one transaction: a crash leaves either both or
// neither. It waits until the events fit in the outbox, so a relay that is
// away costs a bounded outbox and a cursor, not memory: chat.db keeps the
// rest. A batch larger than the whole outbox goes in alone, once the outbox
// is empty: the bound is the larger of MaxOutbox and one tailer batch.
func (j *Journal) Commit(ctx context.Context, events []*linev1.Event, cursor []byte) error {
	for {
		j.mu.Lock()
		n, ch := j.outboxLen, j.changed
		j.mu.Unlock()
		if len(events) == 0 || n == 0 || n+len(events) <= j.maxOutbox {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	added := 0
	var top uint64
	now := j.now().UnixNano()
	err := j.write(func(tx *sql.Tx) error {
		added = 0
		for _, ev := range events {
			ev.Sequence = 0
			blob, err := proto.Marshal(ev)
			if err != nil {
				return fmt.Errorf("event %q: %w", ev.GetKey(), err)
			}
			res, err := tx.Exec(`INSERT INTO outbox(key, event, created_at) SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE key = ?1)`, ev.GetKey(), blob, now)
			if err != nil {
				return fmt.Errorf("append event %q: %w", ev.GetKey(), err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				added++
			}
		}
		if cursor != nil {
			if _, err := tx.Exec(`INSERT INTO kv(k, v) VALUES('chatdb_cursor', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`, cursor); err != nil {
				return fmt.Errorf("store cursor: %w", err)
			}
			var err error
			if top, err = topSequence(context.Background(), tx); err != nil {
				return fmt.Errorf("store cursor: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: commit events: %w", err)
	}
	marked := cursor != nil && j.marks.committed(top, cursor)
	if added > 0 || marked {
		j.mu.Lock()
		j.outboxLen += added
		j.signalLocked()
		j.mu.Unlock()
	}
	return nil
}

func (j *Journal) signalLocked() {
	close(j.changed)
	j.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of the outbox.
func (j *Journal) Changed() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.changed
}

// Cursor returns the stored chat.db cursor, nil when the agent never read it.
func (j *Journal) Cursor(ctx context.Context) ([]byte, error) {
	var v []byte
	err := j.db.QueryRowContext(ctx, `SELECT v FROM kv WHERE k = 'chatdb_cursor'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: cursor: %w", err)
	}
	return v, nil
}

// EventsAfter returns up to limit outbox events with a sequence above seq, in
// order, with their sequences set.
func (j *Journal) EventsAfter(ctx context.Context, seq uint64, limit int) ([]*linev1.Event, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT seq, event FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?`, seq, limit)
	if err != nil {
		return nil, fmt.Errorf("journal: read outbox: %w", err)
	}
	defer rows.Close()
	var out []*linev1.Event
	for rows.Next() {
		var s uint64
		var blob []byte
		if err := rows.Scan(&s, &blob); err != nil {
			return nil, fmt.Errorf("journal: read outbox: %w", err)
		}
		ev := &linev1.Event{}
		if err := proto.Unmarshal(blob, ev); err != nil {
			return nil, fmt.Errorf("journal: event %d: %w", s, err)
		}
		ev.Sequence = s
		out = append(out, ev)
	}
	return out, rows.Err()
}

// Ack drops every event up to seq from the outbox and remembers seq as the
// relay's acknowledged point, the resume point sent in Hello.
func (j *Journal) Ack(ctx context.Context, seq uint64) error {
	var removed int64
	var stored []int64
	err := j.write(func(tx *sql.Tx) error {
		var err error
		if j.obs != nil {
			stored, err = deleteAckedReturning(tx, seq)
			removed = int64(len(stored))
		} else {
			var res sql.Result
			if res, err = tx.Exec(`DELETE FROM outbox WHERE seq <= ?`, seq); err == nil {
				removed, _ = res.RowsAffected()
			}
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO kv(k, v) VALUES('acked_seq', ?) ON CONFLICT(k) DO UPDATE SET v = max(CAST(v AS INTEGER), CAST(excluded.v AS INTEGER))`, seq)
		return err
	})
	if err != nil {
		return fmt.Errorf("journal: ack %d: %w", seq, err)
	}
	if j.obs != nil {
		now := j.now().UnixNano()
		for _, at := range stored {
			j.obs.eventAcked(time.Duration(now - at))
		}
	}
	marked := j.marks.ackedUpTo(seq)
	if removed > 0 || marked {
		j.mu.Lock()
		j.outboxLen -= int(removed)
		j.signalLocked()
		j.mu.Unlock()
	}
	return nil
}

// Acked returns the highest sequence the relay acknowledged.
func (j *Journal) Acked(ctx context.Context) (uint64, error) {
	var v int64
	err := j.db.QueryRowContext(ctx, `SELECT CAST(v AS INTEGER) FROM kv WHERE k = 'acked_seq'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("journal: acked: %w", err)
	}
	return uint64(v), nil
}

// OutboxLen is the number of events waiting for the relay's ack.
func (j *Journal) OutboxLen() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.outboxLen
}

// chatKey names the chat a command targets, for ordering: commands with the
// same key run one after another.
func chatKey(cmd *linev1.Command) string {
	if g := cmd.GetChatGuid(); g != "" {
		return command.ChatKey(g)
	}
	if fa := cmd.GetFetchAttachment(); fa != nil {
		// A fetch may wait for a transfer: it holds up nobody else's.
		return "attachment:" + fa.GetAttachmentGuid()
	}
	var hs []string
	for _, h := range cmd.GetParticipants().GetHandles() {
		hs = append(hs, command.NormalizeLine(h))
	}
	if cc := cmd.GetCreateChat(); cc != nil && len(hs) == 0 {
		for _, h := range cc.GetParticipants() {
			hs = append(hs, command.NormalizeLine(h))
		}
	}
	slices.Sort(hs)
	key := "participants:"
	for i, h := range hs {
		if i > 0 {
			key += ","
		}
		key += h
	}
	return key
}

// The statements every command runs, prepared once when the journal opens.
const (
	sqlRecordCommand = `INSERT INTO commands(id, line, kind, chat, state, command, received_at, updated_at, chatdb_mark, deadline)
		VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`
	sqlFinishCommand = `UPDATE commands SET state = ?, result = ?, command = NULL, checkpoint = NULL, updated_at = ? WHERE id = ?`
	sqlStartCommand  = `UPDATE commands SET state = ?, updated_at = ?, chatdb_mark = ? WHERE id = ? AND state = ?`
)

// markValue stores an unknown chat.db mark (negative) as NULL; 0 is an
// empty chat.db's.
func markValue(mark int64) sql.NullInt64 { return sql.NullInt64{Int64: mark, Valid: mark >= 0} }

// prepare readies the hot statements before the writer runs (preparing
// later, from inside a write, could wait for a connection the write holds).
func (j *Journal) prepare() error {
	j.stmts = map[string]*sql.Stmt{}
	for _, q := range []string{sqlRecordCommand, sqlFinishCommand, sqlStartCommand} {
		st, err := j.db.Prepare(q)
		if err != nil {
			return err
		}
		j.stmts[q] = st
	}
	return nil
}

// exec runs one of the prepared statements in tx (database/sql prepares it
// once per connection) instead of parsing it on every call.
func (j *Journal) exec(tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st := j.stmts[query]; st != nil {
		return tx.Stmt(st).Exec(args...)
	}
	return tx.Exec(query, args...)
}
