package relay

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxWriteBatch bounds how many write jobs share one transaction, so one
// commit never grows without limit under a flood of submits.
const maxWriteBatch = 512

// errStoreClosed is returned for a write attempted after the store closed.
var errStoreClosed = errors.New("relay: store closed")

// writeJob is one unit of work for the writer: fn runs inside the batch's
// transaction in a savepoint of its own, so a failing job leaves the others
// intact. err is set before done is closed.
type writeJob struct {
	ctx  context.Context
	fn   func(*sql.Tx) error
	err  error
	done chan struct{}
}

// writer is the store's group commit: one goroutine owns every write. It
// takes whatever jobs are waiting (up to maxWriteBatch), runs them in one
// IMMEDIATE transaction, each in a SAVEPOINT, commits once, and only then
// tells each caller its outcome. A caller that returns after its write is
// therefore durable exactly as before (WAL, synchronous=NORMAL), but many
// callers share one commit. Jobs queued together by one caller (writeAll)
// run in their order, and jobs from one goroutine run in the order queued,
// so a stream's frames still take effect in the order they were sent.
type writer struct {
	db   *sql.DB
	jobs chan []*writeJob

	mu     sync.RWMutex // held for reading while queueing; Lock to close
	closed bool
	exited chan struct{}
}

func newWriter(db *sql.DB) *writer {
	w := &writer{db: db, jobs: make(chan []*writeJob, 256), exited: make(chan struct{})}
	go w.run()
	return w
}

// queue hands jobs to the writer without waiting for them.
func (w *writer) queue(jobs ...*writeJob) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errStoreClosed
	}
	w.jobs <- jobs
	return nil
}

func newJob(ctx context.Context, fn func(*sql.Tx) error) *writeJob {
	return &writeJob{ctx: ctx, fn: fn, done: make(chan struct{})}
}

// wait blocks until the job's batch has committed (or failed). It does not
// give up on ctx: a job that already started may still commit, and a caller
// must not report failure for a write that happened.
func (j *writeJob) wait() error {
	<-j.done
	return j.err
}

// close stops taking jobs, commits the ones already queued and waits for
// the writer to exit.
func (w *writer) close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.jobs)
	}
	w.mu.Unlock()
	<-w.exited
}

func (w *writer) run() {
	defer close(w.exited)
	var batch []*writeJob
	for first := range w.jobs {
		batch = append(batch[:0], first...)
	gather:
		for len(batch) < maxWriteBatch {
			select {
			case more, ok := <-w.jobs:
				if !ok {
					break gather
				}
				batch = append(batch, more...)
			default:
				break gather
			}
		}
		w.commit(batch)
		clear(batch)
	}
}

// commit runs batch in one transaction and reports each job's outcome.
func (w *writer) commit(batch []*writeJob) {
	finish := func(err error) {
		for _, j := range batch {
			if j.err == nil {
				j.err = err
			}
			close(j.done)
		}
	}
	ctx := context.Background()
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		finish(err)
		return
	}
	if len(batch) == 1 {
		// One job: the transaction itself is its savepoint.
		j := batch[0]
		if j.err = j.ctx.Err(); j.err == nil {
			j.err = j.fn(tx)
		}
		if j.err != nil {
			tx.Rollback()
			finish(nil)
			return
		}
		finish(tx.Commit())
		return
	}
	for _, j := range batch {
		if j.err = j.ctx.Err(); j.err != nil {
			continue
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT w`); err != nil {
			tx.Rollback()
			finish(err)
			return
		}
		if j.err = j.fn(tx); j.err != nil {
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO w`); err != nil {
				// The transaction is gone (SQLite aborted it): every job
				// in it, done or not, fails.
				tx.Rollback()
				finish(err)
				return
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE w`); err != nil {
			tx.Rollback()
			finish(err)
			return
		}
	}
	finish(tx.Commit())
}
