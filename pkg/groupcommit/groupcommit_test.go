package groupcommit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	_ "modernc.org/sqlite"
)

// openDB opens a new SQLite file in WAL mode, as the journal and the relay
// store do, with a table t(id, v) for the jobs to write.
func openDB(t *testing.T) *sql.DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "test.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q, %v; want wal", mode, err)
	}
	if _, err := db.Exec(`CREATE TABLE t (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, v BLOB)`); err != nil {
		t.Fatal(err)
	}
	return db
}

// start opens a database (see openDB) and its writer, closed at the end of
// the test.
func start(t *testing.T, opts Options) (*sql.DB, *Writer) {
	t.Helper()
	db := openDB(t)
	w := New(db, opts)
	t.Cleanup(w.Close)
	return db, w
}

// insert is a job that adds the row id.
func insert(id string) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO t(id) VALUES(?)`, id)
		return err
	}
}

// ids lists the rows of t in the order they were written.
func ids(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT id FROM t ORDER BY n`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

// hold queues a job that keeps the writer busy until release is called, so
// that what the test queues meanwhile waits and forms the next batches.
func hold(t *testing.T, w *Writer) (release func()) {
	t.Helper()
	started, gate := make(chan struct{}), make(chan struct{})
	j := NewJob(context.Background(), func(*sql.Tx) error {
		close(started)
		<-gate
		return nil
	})
	if err := w.Queue(j); err != nil {
		t.Fatal(err)
	}
	<-started
	return func() {
		close(gate)
		if err := j.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConcurrentWritesShareCommits: N goroutines that write at once are
// durable in fewer than N transactions.
func TestConcurrentWritesShareCommits(t *testing.T) {
	db, w := start(t, Options{})
	release := hold(t, w)
	const n = 50
	var queued, done sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		queued.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			j := NewJob(context.Background(), insert(fmt.Sprint("w", i)))
			err := w.Queue(j)
			queued.Done()
			if err == nil {
				err = j.Wait()
			}
			errs[i] = err
		}()
	}
	queued.Wait()
	release()
	done.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if got := len(ids(t, db)); got != n {
		t.Fatalf("%d rows; want %d", got, n)
	}
	// The held job's transaction, then one for all n.
	if c := w.Commits(); c != 2 {
		t.Fatalf("%d commits for 1+%d writes; want 2", c, n)
	}
}

// TestBatchIsBounded: no transaction takes more than MaxBatch jobs, except
// the jobs of one Queue call, which stay together, and a call that does not
// fit in a batch waits for the next one whole.
func TestBatchIsBounded(t *testing.T) {
	// batch numbers the transactions; AfterBatch and the jobs all run on the
	// writer's goroutine, and the test reads it after Wait.
	batch := 0
	db, w := start(t, Options{MaxBatch: 4, AfterBatch: func(error) { batch++ }})
	ran := map[string]int{} // job → its batch
	job := func(id string) *Job {
		return NewJob(context.Background(), func(tx *sql.Tx) error {
			ran[id] = batch
			return insert(id)(tx)
		})
	}
	release := hold(t, w) // batch 0
	var jobs []*Job
	for i := range 3 {
		j := job(fmt.Sprint("s", i))
		jobs = append(jobs, j)
		if err := w.Queue(j); err != nil {
			t.Fatal(err)
		}
	}
	var call []*Job
	for i := range 6 {
		call = append(call, job(fmt.Sprint("call", i)))
	}
	if err := w.Queue(call...); err != nil {
		t.Fatal(err)
	}
	jobs = append(jobs, call...)
	// A flood of single jobs, more than the queue holds.
	for i := range 20 {
		j := job(fmt.Sprint("f", i))
		jobs = append(jobs, j)
		if i == 0 {
			release()
		}
		if err := w.Queue(j); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range jobs {
		if err := j.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	// The three singles fit in batch 1; the call of 6 did not fit beside
	// them and is batch 2, alone.
	for i := range 3 {
		if b := ran[fmt.Sprint("s", i)]; b != 1 {
			t.Errorf("single s%d ran in batch %d; want 1", i, b)
		}
	}
	for i := range 6 {
		if b := ran[fmt.Sprint("call", i)]; b != 2 {
			t.Errorf("job %d of the call of 6 ran in batch %d; want 2", i, b)
		}
	}
	size := map[int]int{}
	for _, b := range ran {
		size[b]++
	}
	for b, n := range size {
		if n > 4 && b != 2 {
			t.Errorf("batch %d had %d jobs; want at most 4", b, n)
		}
	}
	if size[2] != 6 {
		t.Errorf("batch 2 had %d jobs; want the call's 6 alone", size[2])
	}
	if c, want := w.Commits(), int64(batch); c != want {
		t.Errorf("%d commits for %d batches", c, want)
	}
	if got := len(ids(t, db)); got != 29 {
		t.Fatalf("%d rows; want 29", got)
	}
}

// TestOrderWithinOneQueueCall: the jobs of one call run in their order, in
// one transaction, and calls from one goroutine run in the order made.
func TestOrderWithinOneQueueCall(t *testing.T) {
	db, w := start(t, Options{})
	release := hold(t, w)
	var want []string
	var all []*Job
	for c := range 5 {
		var call []*Job
		for i := range 7 {
			id := fmt.Sprintf("c%d-%d", c, i)
			want = append(want, id)
			call = append(call, NewJob(context.Background(), insert(id)))
		}
		if err := w.Queue(call...); err != nil {
			t.Fatal(err)
		}
		all = append(all, call...)
	}
	release()
	for _, j := range all {
		if err := j.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if got := ids(t, db); !slices.Equal(got, want) {
		t.Fatalf("rows in order %v; want %v", got, want)
	}
}

// TestFailingJobDoesNotUndoOthers: a job that returns an error is rolled
// back alone; the jobs before and after it in the same transaction commit.
func TestFailingJobDoesNotUndoOthers(t *testing.T) {
	var afterBatch []error
	db, w := start(t, Options{AfterBatch: func(err error) { afterBatch = append(afterBatch, err) }})
	refused := errors.New("refused")
	a := NewJob(context.Background(), insert("a"))
	bad := NewJob(context.Background(), func(tx *sql.Tx) error {
		if err := insert("bad")(tx); err != nil {
			return err
		}
		return refused
	})
	dup := NewJob(context.Background(), insert("a")) // UNIQUE fails
	c := NewJob(context.Background(), insert("c"))
	if err := w.Queue(a, bad, dup, c); err != nil {
		t.Fatal(err)
	}
	if err := bad.Wait(); !errors.Is(err, refused) {
		t.Fatalf("failing job: %v; want its own error", err)
	}
	if err := dup.Wait(); err == nil || !strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("duplicate insert: %v; want the UNIQUE constraint error", err)
	}
	for _, j := range []*Job{a, c} {
		if err := j.Wait(); err != nil {
			t.Fatalf("a job beside the failing ones: %v", err)
		}
	}
	if got := ids(t, db); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("rows %v; want [a c]", got)
	}
	if c := w.Commits(); c != 1 {
		t.Fatalf("%d commits; want 1", c)
	}
	// AfterBatch ran before the jobs were told, with the first failure.
	if len(afterBatch) != 1 || !errors.Is(afterBatch[0], refused) {
		t.Fatalf("AfterBatch saw %v; want [refused]", afterBatch)
	}
}

// TestAbortingJobFailsAlone: SQLITE_FULL (here from max_page_count, as on a
// full disk) makes SQLite roll the whole transaction back; the job that hit
// it fails with it, and the other jobs of its batch still commit.
func TestAbortingJobFailsAlone(t *testing.T) {
	db := openDB(t)
	// max_page_count belongs to a connection: one connection, so the
	// writer's transactions use the capped one.
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`INSERT INTO t(id, v) VALUES('small', 0)`); err != nil {
		t.Fatal(err)
	}
	var pages int64
	if err := db.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	w := New(db, Options{})
	var mu sync.Mutex
	runs := map[string]int{}
	update := func(name string, v int) *Job {
		return NewJob(context.Background(), func(tx *sql.Tx) error {
			mu.Lock()
			runs[name]++
			mu.Unlock()
			_, err := tx.Exec(`UPDATE t SET v = ? WHERE id = 'small'`, v)
			return err
		})
	}
	before := update("before", 1)
	big := NewJob(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO t(id, v) VALUES('big', ?)`, make([]byte, 1<<20))
		return err
	})
	after := update("after", 2)
	if err := w.Queue(before, big, after); err != nil {
		t.Fatal(err)
	}
	if err := big.Wait(); err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("the job that needs room: %v; want SQLite's disk full", err)
	}
	for _, j := range []*Job{before, after} {
		if err := j.Wait(); err != nil {
			t.Fatalf("a job of the same batch failed with the one that needed room: %v", err)
		}
	}
	w.Close()
	// The job before ran three times: in the batch's first run without
	// savepoints (rolled back at the failure), in the careful run SQLite
	// aborted, and in the one that committed.
	if runs["before"] != 3 || runs["after"] != 1 {
		t.Fatalf("runs %v; want before three times, after once: SQLite no longer aborts the transaction, so this test does not test that", runs)
	}
	var v int
	if err := db.QueryRow(`SELECT v FROM t WHERE id = 'small'`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("v = %d, %v; want 2: the jobs around the aborting one are durable, in order", v, err)
	}
	if got := ids(t, db); !slices.Equal(got, []string{"small"}) {
		t.Fatalf("rows %v; want only small", got)
	}
}

// TestJobWithDoneContextIsNotRun: a job whose context ended before its turn
// fails with the context's error and changes nothing.
func TestJobWithDoneContextIsNotRun(t *testing.T) {
	db, w := start(t, Options{})
	release := hold(t, w)
	ctx, cancel := context.WithCancel(context.Background())
	gone := NewJob(ctx, insert("gone"))
	kept := NewJob(context.Background(), insert("kept"))
	if err := w.Queue(gone, kept); err != nil {
		t.Fatal(err)
	}
	cancel()
	release()
	if err := gone.Wait(); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled job: %v; want context.Canceled", err)
	}
	if err := kept.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, db); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("rows %v; want [kept]", got)
	}
}

// TestThenIsCalledBeforeWaitReturns: a job's done function hears its
// outcome, and Wait returns only after it ran.
func TestThenIsCalledBeforeWaitReturns(t *testing.T) {
	_, w := start(t, Options{})
	var heard []error // written by the writer, read after Wait
	ok := NewJob(context.Background(), insert("x")).Then(func(err error) { heard = append(heard, err) })
	dup := NewJob(context.Background(), insert("x")).Then(func(err error) { heard = append(heard, err) })
	if err := w.Queue(ok, dup); err != nil {
		t.Fatal(err)
	}
	ok.Wait()
	dup.Wait()
	if len(heard) != 2 || heard[0] != nil || heard[1] == nil {
		t.Fatalf("done heard %v; want [nil, the UNIQUE error]", heard)
	}
}

// TestCloseCommitsWhatWasQueued: Close waits for the jobs queued before it
// and commits them; a job queued after it fails with ErrClosed, through
// Queue, Wait, its done function and Do alike.
func TestCloseCommitsWhatWasQueued(t *testing.T) {
	db, w := start(t, Options{})
	release := hold(t, w)
	var jobs []*Job
	for i := range 20 {
		j := NewJob(context.Background(), insert(fmt.Sprint("q", i)))
		jobs = append(jobs, j)
		if err := w.Queue(j); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	release()
	<-closed
	for i, j := range jobs {
		if err := j.Wait(); err != nil {
			t.Fatalf("job %d queued before Close: %v", i, err)
		}
	}
	if got := len(ids(t, db)); got != 20 {
		t.Fatalf("%d rows after Close; want 20", got)
	}

	var heard error
	late := NewJob(context.Background(), insert("late")).Then(func(err error) { heard = err })
	if err := w.Queue(late); !errors.Is(err, ErrClosed) {
		t.Fatalf("Queue after Close: %v; want ErrClosed", err)
	}
	if err := late.Wait(); !errors.Is(err, ErrClosed) || !errors.Is(heard, ErrClosed) {
		t.Fatalf("late job: Wait %v, done heard %v; want ErrClosed", err, heard)
	}
	if err := w.Do(context.Background(), insert("later")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: %v; want ErrClosed", err)
	}
	w.Close() // again: nothing happens
	if got := len(ids(t, db)); got != 20 {
		t.Fatalf("%d rows; want 20: nothing after Close was written", got)
	}
}

// errConflict stands for a failure a concurrent transaction caused: the
// kind Options.Retryable says may pass.
var errConflict = errors.New("conflict")

func conflictRetryable(err error) bool { return errors.Is(err, errConflict) }

// flaky is a job that writes id and then fails with errConflict on its
// first fails runs; runs counts them all.
func flaky(id string, fails int, runs *int) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		*runs++
		if err := insert(id)(tx); err != nil {
			return err
		}
		if *runs <= fails {
			return fmt.Errorf("run %d: %w", *runs, errConflict)
		}
		return nil
	}
}

// A job whose failure Options.Retryable says may pass is rolled back and
// run again, alone or in a batch, and its caller sees only the run that
// succeeded: what the failed runs wrote is gone, the other jobs of its
// batch commit once.
func TestRetryableFailuresRunTheJobAgain(t *testing.T) {
	db, w := start(t, Options{Retryable: conflictRetryable})
	var alone int
	if err := w.Do(context.Background(), flaky("alone", 2, &alone)); err != nil || alone != 3 {
		t.Fatalf("alone: %v after %d runs, want success on the third", err, alone)
	}

	release := hold(t, w)
	var mid int
	jobs := []*Job{
		NewJob(context.Background(), insert("first")),
		NewJob(context.Background(), flaky("mid", 1, &mid)),
		NewJob(context.Background(), insert("last")),
	}
	if err := w.Queue(jobs...); err != nil {
		t.Fatal(err)
	}
	release()
	for i, j := range jobs {
		if err := j.Wait(); err != nil {
			t.Fatalf("batch job %d: %v", i, err)
		}
	}
	if mid != 2 {
		t.Fatalf("the batch's flaky job ran %d times, want 2", mid)
	}
	if got, want := ids(t, db), []string{"alone", "first", "mid", "last"}; !slices.Equal(got, want) {
		t.Fatalf("rows %v, want %v", got, want)
	}
}

// A job that keeps failing stops after RetryAttempts runs with an error
// that says so and wraps the last failure; a failure Retryable does not
// name, or any failure without Retryable, is not run again.
func TestRetriesAreBounded(t *testing.T) {
	db, w := start(t, Options{Retryable: conflictRetryable})
	var runs int
	err := w.Do(context.Background(), flaky("never", 1000, &runs))
	if !errors.Is(err, errConflict) || !strings.Contains(err.Error(), fmt.Sprintf("gave up after %d attempts", RetryAttempts)) || runs != RetryAttempts {
		t.Fatalf("%v after %d runs, want errConflict after %d", err, runs, RetryAttempts)
	}
	other := errors.New("not a conflict")
	runs = 0
	if err := w.Do(context.Background(), func(*sql.Tx) error { runs++; return other }); !errors.Is(err, other) || runs != 1 {
		t.Fatalf("%v after %d runs, want the failure once", err, runs)
	}
	_, plain := start(t, Options{})
	runs = 0
	if err := plain.Do(context.Background(), flaky("x", 1, &runs)); !errors.Is(err, errConflict) || runs != 1 {
		t.Fatalf("without Retryable: %v after %d runs, want the failure once", err, runs)
	}
	if got := ids(t, db); len(got) != 0 {
		t.Fatalf("rows %v written by failed runs", got)
	}
}

// A batch runs without savepoints until a job fails: then it is rolled
// back and runs again with one per job. So without a failure each job runs
// once; with one, the jobs before it run twice and those after once, and
// every job but the failing one commits.
func TestBatchRunsAgainCarefullyAfterAFailure(t *testing.T) {
	for _, fail := range []bool{false, true} {
		db, w := start(t, Options{})
		release := hold(t, w)
		runs := map[string]int{}
		job := func(id string, err error) *Job {
			return NewJob(context.Background(), func(tx *sql.Tx) error {
				runs[id]++
				if err := insert(id)(tx); err != nil {
					return err
				}
				return err
			})
		}
		var midErr error
		if fail {
			midErr = errors.New("refused")
		}
		jobs := []*Job{job("a", nil), job("b", nil), job("mid", midErr), job("z", nil)}
		if err := w.Queue(jobs...); err != nil {
			t.Fatal(err)
		}
		release()
		if err := jobs[2].Wait(); !errors.Is(err, midErr) {
			t.Fatalf("fail %v: the middle job: %v", fail, err)
		}
		want, rows := map[string]int{"a": 1, "b": 1, "mid": 1, "z": 1}, []string{"a", "b", "mid", "z"}
		if fail {
			want, rows = map[string]int{"a": 2, "b": 2, "mid": 2, "z": 1}, []string{"a", "b", "z"}
		}
		if !maps.Equal(runs, want) {
			t.Fatalf("fail %v: runs %v, want %v", fail, runs, want)
		}
		if got := ids(t, db); !slices.Equal(got, rows) {
			t.Fatalf("fail %v: rows %v, want %v", fail, got, rows)
		}
	}
}
