package walcheckpoint

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

func open(t *testing.T) (*sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma="+Pragma())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE bulk(b BLOB)`); err != nil {
		t.Fatal(err)
	}
	return db, path
}

// write commits n transactions of 100 KB each, calling after each commit.
func write(t *testing.T, db *sql.DB, n int, after func(error)) {
	t.Helper()
	row := bytes.Repeat([]byte{7}, 4000)
	for range n {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for range 25 {
			if _, err := tx.Exec(`INSERT INTO bulk(b) VALUES(?)`, row); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if after != nil {
			after(nil)
		}
	}
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// The WAL's pages reach the database while the writer's own checkpoint
// (BackstopPages, 8 MB) has not come due: 3 MB is below it, so only the
// Checkpointer can have copied them. Without Wrote, they stay in the WAL.
func TestCommitsReachTheDatabase(t *testing.T) {
	if BackstopPages*4096 <= 4<<20 {
		t.Fatalf("the test writes too much for what it proves: the backstop is %d pages", BackstopPages)
	}
	for _, kicked := range []bool{false, true} {
		db, path := open(t)
		c := Start(db, time.Millisecond)
		before := size(t, path)
		var after func(error)
		if kicked {
			after = c.Wrote
		}
		write(t, db, 30, after)
		deadline := time.Now().Add(10 * time.Second)
		if !kicked {
			deadline = time.Now().Add(200 * time.Millisecond)
		}
		for size(t, path) < before+5<<19 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		copied := size(t, path) >= before+5<<19
		c.Close()
		switch {
		case kicked && !copied:
			t.Fatalf("the database is %d bytes after 3 MB committed (2.5 MB wanted) (%d before): the WAL was not checkpointed (%d runs, %d failed)", size(t, path), before, c.Runs(), c.Failures())
		case !kicked && copied:
			t.Fatal("the database grew by 2.5 MB without a checkpoint: the writer's backstop is lower than the test assumes, so it proves nothing")
		case !kicked && c.Runs() != 0:
			t.Fatalf("%d checkpoints ran with no commit said", c.Runs())
		}
		if c.Failures() != 0 {
			t.Fatalf("%d checkpoints failed", c.Failures())
		}
	}
}

// Under a steady stream of commits, checkpoints come at most once per gap.
func TestAtMostOncePerGap(t *testing.T) {
	db, _ := open(t)
	const gap = 50 * time.Millisecond
	c := Start(db, gap)
	defer c.Close()
	start := time.Now()
	for time.Since(start) < 300*time.Millisecond {
		write(t, db, 1, c.Wrote)
	}
	elapsed := time.Since(start)
	if most := uint64(elapsed/gap) + 1; c.Runs() > most {
		t.Fatalf("%d checkpoints in %s: more than one per %s", c.Runs(), elapsed, gap)
	}
	if c.Runs() < 2 {
		t.Fatalf("%d checkpoints in %s of commits", c.Runs(), elapsed)
	}
}

// Close stops the goroutine and may be called twice; Wrote after Close
// does not block.
func TestCloseTwice(t *testing.T) {
	db, _ := open(t)
	c := Start(db, Gap)
	c.Close()
	c.Close()
	c.Wrote(nil)
	c.Wrote(nil)
	if _, err := db.ExecContext(context.Background(), `INSERT INTO bulk(b) VALUES(x'00')`); err != nil {
		t.Fatal(err)
	}
}
