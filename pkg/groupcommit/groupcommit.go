// Package groupcommit is the one writer of a SQLite database that many
// goroutines write to: the agent's journal (state.db) and the relay's store
// (relay.db) both write through it.
//
// Why: a durable write costs an fsync, and an fsync costs the same for one
// write as for a hundred. So callers hand their writes to one goroutine as
// jobs, and it runs whatever jobs are waiting in one transaction and commits
// once: durability costs one fsync per batch, not one per write, and many
// callers share it. A caller still learns its outcome only after the commit,
// so a write that returns nil is as durable as the database's synchronous
// setting makes any commit.
//
// What a caller can rely on:
//
//   - A job that fails is rolled back alone and the others of its batch
//     commit. A batch runs first without savepoints (each costs a round
//     trip to a database server, and jobs rarely fail); after a failure it
//     is rolled back and runs again with a savepoint per job.
//   - A job whose failure makes SQLite abort the whole transaction (it may, on
//     SQLITE_FULL or an I/O error, taking every savepoint with it) fails
//     alone with its own error: the other jobs of the batch run again in a
//     new transaction, without it, and commit.
//   - Jobs queued in one call run in their order, in one transaction (even
//     beyond the batch bound); calls queued one after another (as from one
//     goroutine) run in the order queued.
//   - A batch holds at most Options.MaxBatch jobs, so one commit never grows
//     without limit under a flood of writes; the queue in front of the writer
//     is bounded too, and Queue waits when it is full.
//   - Close commits what was queued before it; jobs queued after fail with
//     ErrClosed.
//   - With Options.Retryable, a job that failed for a concurrent
//     transaction (PostgreSQL's deadlock, say) is rolled back with its
//     batch and run again with it, a few times at most, without its caller
//     seeing the failure.
//
// A job's function runs on the writer's goroutine, inside the transaction,
// and may run more than once (when another job aborted the transaction it
// ran in): only its last run is kept, so it sets what it reports afresh each
// time. It must use only the *sql.Tx it is given and must not queue jobs
// and wait for them (the writer would wait for itself).
package groupcommit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is the outcome of a job queued after Close.
var ErrClosed = errors.New("groupcommit: writer closed")

// DefaultMaxBatch is the batch bound when Options.MaxBatch is zero.
const DefaultMaxBatch = 256

// RetryAttempts bounds how often a job runs when Options.Retryable keeps
// saying its failures may pass; retryPause, times the attempts so far, is
// the wait before the next run.
const (
	RetryAttempts = 5
	retryPause    = 10 * time.Millisecond
)

// Options configures a Writer.
type Options struct {
	// MaxBatch bounds the jobs committed in one transaction, and the calls
	// of Queue waiting for the writer. Zero means DefaultMaxBatch.
	MaxBatch int
	// AfterBatch, if set, is called on the writer's goroutine once a batch's
	// outcome is known and before any of its jobs is told: err is the first
	// error of the batch's jobs in queue order, nil when all succeeded. (The
	// agent's journal keeps it for health: a caller told of its failure finds
	// health already showing it.)
	AfterBatch func(err error)
	// Retryable, if set, reports a job's failure that running the job
	// again may not meet, because a concurrent transaction caused it
	// (PostgreSQL's deadlock and serialization failures). The job's
	// transaction is rolled back, with every job of its batch, which
	// releases all the locks they took so the other transaction goes on;
	// after a pause the batch runs again, the job at most RetryAttempts
	// times in all (then it fails alone and the others run without it).
	// Nil where writes never conflict (SQLite has one writer).
	Retryable func(error) bool
}

// Job is one write. Make it with NewJob, hand it to Writer.Queue, and Wait
// for its outcome.
type Job struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	then func(error)
	err  error // set before done is closed
	done chan struct{}
	runs int // how often fn has failed for Options.Retryable so far
}

// NewJob makes a job that runs fn. If ctx is done before the job runs, fn is
// not run and the job fails with ctx's error; once fn has run, ctx no longer
// matters.
func NewJob(ctx context.Context, fn func(*sql.Tx) error) *Job {
	return &Job{ctx: ctx, fn: fn, done: make(chan struct{})}
}

// Then arranges for done to be called with the job's outcome, before Wait
// returns, and returns j. It must be called before the job is queued. done
// runs on the writer's goroutine (or on Queue's caller's, when the writer is
// closed): it must be quick and must not wait for other jobs.
func (j *Job) Then(done func(error)) *Job {
	j.then = done
	return j
}

// Wait blocks until the job's transaction has committed or the job failed,
// and returns its outcome. It does not give up early: a job that started
// may still commit, and a caller must not report failure for a write that
// happened.
func (j *Job) Wait() error {
	<-j.done
	return j.err
}

func (j *Job) finish(err error) {
	j.err = err
	if j.then != nil {
		j.then(err)
	}
	close(j.done)
}

// Writer owns every write of one database. Make it with New; Close it
// before closing the database.
type Writer struct {
	db         *sql.DB
	maxBatch   int
	afterBatch func(error)
	retryable  func(error) bool
	calls      chan []*Job
	exited     chan struct{}
	commits    atomic.Int64

	mu     sync.RWMutex // held for reading while queueing, for writing to close
	closed bool         // guarded by mu
}

// New starts the writer of db. Every write of db should go through it: a
// write beside it waits for the writer's transactions and shares none of
// its commits.
func New(db *sql.DB, opts Options) *Writer {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	w := &Writer{
		db:         db,
		maxBatch:   opts.MaxBatch,
		afterBatch: opts.AfterBatch,
		retryable:  opts.Retryable,
		calls:      make(chan []*Job, opts.MaxBatch),
		exited:     make(chan struct{}),
	}
	go w.run()
	return w
}

// Queue hands jobs to the writer without waiting for their outcome; they run
// in their order, in one transaction. It waits only while the writer's queue
// is full. After Close it returns ErrClosed, and every one of jobs fails
// with it.
func (w *Writer) Queue(jobs ...*Job) error {
	if len(jobs) == 0 {
		return nil
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		for _, j := range jobs {
			j.finish(ErrClosed)
		}
		return ErrClosed
	}
	w.calls <- jobs
	return nil
}

// Do runs fn as one job and returns its outcome once committed (see NewJob
// for what ctx does).
func (w *Writer) Do(ctx context.Context, fn func(*sql.Tx) error) error {
	j := NewJob(ctx, fn)
	w.Queue(j) // after Close, j fails with ErrClosed
	return j.Wait()
}

// Close stops taking jobs, commits those already queued and returns once
// the writer has finished. Calling it again does nothing.
func (w *Writer) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.calls)
	}
	w.mu.Unlock()
	<-w.exited
}

// Commits is the number of transactions the writer has committed: with N
// jobs done, N/Commits is how many shared each commit.
func (w *Writer) Commits() int64 { return w.commits.Load() }

func (w *Writer) run() {
	defer close(w.exited)
	var (
		batch []*Job
		next  []*Job // a call that did not fit in the batch before
	)
	for {
		if next == nil {
			call, ok := <-w.calls
			if !ok {
				return
			}
			next = call
		}
		batch = append(batch[:0], next...)
		next = nil
	gather:
		for len(batch) < w.maxBatch {
			select {
			case call, ok := <-w.calls:
				if !ok {
					break gather
				}
				if len(batch)+len(call) > w.maxBatch {
					next = call
					break gather
				}
				batch = append(batch, call...)
			default:
				break gather
			}
		}
		w.commit(batch)
		clear(batch)
	}
}

// commit runs batch until every job has its outcome, then tells them.
func (w *Writer) commit(batch []*Job) {
	careful := false
	for pending := batch; len(pending) > 0; {
		pending, careful = w.try(pending, careful)
	}
	if w.afterBatch != nil {
		var first error
		for _, j := range batch {
			if j.err != nil {
				first = j.err
				break
			}
		}
		w.afterBatch(first)
	}
	for _, j := range batch {
		j.finish(j.err)
	}
}

// try runs jobs in one transaction and commits it, setting each job's err,
// and returns the jobs to run again and whether they run carefully.
//
// Not careful, several jobs run without savepoints; when one fails, the
// transaction is rolled back and every job runs again, carefully.
// Carefully, each job runs in a savepoint, so one that fails is rolled
// back alone; when a job breaks the transaction (SQLite rolled it back, and
// what the jobs before it wrote went with it), that job keeps its error and
// the others run again without it. A job alone needs no savepoint (the
// transaction is its own); when Options.Retryable says its failure may
// pass, it runs again.
func (w *Writer) try(jobs []*Job, careful bool) (again []*Job, _ bool) {
	ctx := context.Background()
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		for _, j := range jobs {
			j.err = fmt.Errorf("begin transaction: %w", err)
		}
		return nil, careful
	}
	if len(jobs) == 1 {
		j := jobs[0]
		if j.err = j.ctx.Err(); j.err == nil {
			j.err = j.fn(tx)
		}
		if j.err != nil {
			_ = tx.Rollback()
			if w.again(j) {
				return jobs, careful
			}
			return nil, careful
		}
		w.commitTx(tx, jobs)
		return nil, careful
	}
	if !careful {
		for _, j := range jobs {
			if j.err = j.ctx.Err(); j.err != nil {
				continue
			}
			if j.err = j.fn(tx); j.err != nil {
				_ = tx.Rollback()
				for _, j := range jobs {
					j.err = nil
				}
				return jobs, true
			}
		}
		w.commitTx(tx, jobs)
		return nil, false
	}
	for k, j := range jobs {
		if j.err = j.ctx.Err(); j.err != nil {
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT job`); err != nil {
			j.err = fmt.Errorf("savepoint: %w", err)
			_ = tx.Rollback()
			return slices.Delete(slices.Clone(jobs), k, k+1), true
		}
		if j.err = j.fn(tx); j.err != nil {
			if w.retryable != nil && w.retryable(j.err) {
				// The whole batch goes, so the locks the jobs before it
				// took go too (a deadlock may run through them), and it
				// pauses outside any transaction; then all run again.
				_ = tx.Rollback()
				if w.again(j) {
					for _, o := range jobs {
						if o != j {
							o.err = nil
						}
					}
					return jobs, true
				}
				return slices.Delete(slices.Clone(jobs), k, k+1), true
			}
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO job`); err != nil {
				_ = tx.Rollback()
				return slices.Delete(slices.Clone(jobs), k, k+1), true
			}
		}
		// RELEASE fails when the savepoint is gone: the job broke the
		// transaction and did not say so.
		if _, err := tx.ExecContext(ctx, `RELEASE job`); err != nil {
			if j.err == nil {
				j.err = fmt.Errorf("release savepoint: %w", err)
			}
			_ = tx.Rollback()
			return slices.Delete(slices.Clone(jobs), k, k+1), true
		}
	}
	w.commitTx(tx, jobs)
	return nil, true
}

// again reports whether j, whose last run failed (and was rolled back),
// runs again: when Options.Retryable says its failure may pass and it has
// runs left. It waits the pause first (the other transaction takes what
// j released, or j's next run may take it back first and meet the same
// failure), and gives up when j's context ends meanwhile. When j has no
// runs left its error says so.
func (w *Writer) again(j *Job) bool {
	if w.retryable == nil || !w.retryable(j.err) {
		return false
	}
	j.runs++
	if j.runs >= RetryAttempts {
		j.err = fmt.Errorf("groupcommit: gave up after %d attempts: %w", j.runs, j.err)
		return false
	}
	t := time.NewTimer(time.Duration(j.runs) * retryPause)
	defer t.Stop()
	select {
	case <-j.ctx.Done():
		return false
	case <-t.C:
	}
	j.err = nil
	return true
}

// commitTx commits tx; if that fails, every job in it fails.
func (w *Writer) commitTx(tx *sql.Tx, jobs []*Job) {
	if err := tx.Commit(); err != nil {
		for _, j := range jobs {
			if j.err == nil {
				j.err = fmt.Errorf("commit: %w", err)
			}
		}
		return
	}
	w.commits.Add(1)
}
