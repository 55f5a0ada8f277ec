package relay

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The WAL's pages reach relay.db without the writer checkpointing: 3 MB
// is below the writer's own automatic checkpoint (walBackstopPages), so
// only the background checkpoints can have copied it.
func TestStoreCheckpointsInTheBackground(t *testing.T) {
	if walBackstopPages*4096 <= 4<<20 {
		t.Fatalf("the test writes too much for what it proves: the writer's backstop is %d pages", walBackstopPages)
	}
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ctx := context.Background()
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE bulk(b BLOB)`); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(filepath.Join(dir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	page := bytes.Repeat([]byte{7}, 4000)
	for range 30 {
		if err := st.tx(ctx, func(tx *sql.Tx) error {
			for range 25 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO bulk(b) VALUES(?)`, page); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fi, err := os.Stat(filepath.Join(dir, dbFile))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() >= before.Size()+3<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay.db is %d bytes after 3 MB committed (%d before): the WAL was not checkpointed (%d checkpoints run, %d failed)",
				fi.Size(), before.Size(), st.ckpt.runs.Load(), st.ckpt.fails.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := st.ckpt.fails.Load(); n != 0 {
		t.Fatalf("%d checkpoints failed", n)
	}
	var pages int
	if err := st.db.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != walBackstopPages {
		t.Fatalf("the writer's own checkpoint is at %d pages, want the backstop %d", pages, walBackstopPages)
	}
}

// An idle store runs no checkpoints: they follow commits, not a clock.
func TestStoreCheckpointsOnlyAfterWrites(t *testing.T) {
	st, err := openStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	time.Sleep(5 * checkpointGap)
	if n := st.ckpt.runs.Load(); n != 0 {
		t.Fatalf("%d checkpoints ran on a store nothing was written to since it opened", n)
	}
	if _, err := st.exec(context.Background(), `UPDATE agents SET id = id WHERE 0`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.ckpt.runs.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint after a commit")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
