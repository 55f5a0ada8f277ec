package relay

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/walcheckpoint"
)

// The store's writes reach relay.db through its background checkpoints
// (pkg/walcheckpoint tests them), and the writer's own checkpoint is the
// backstop: 3 MB is below it, so only the background ones can have
// copied it.
func TestStoreCheckpointsInTheBackground(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ctx := context.Background()
	var pages int
	if err := st.db.QueryRowContext(ctx, `PRAGMA wal_autocheckpoint`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != walcheckpoint.BackstopPages {
		t.Fatalf("the writer's own checkpoint is at %d pages, want the backstop %d", pages, walcheckpoint.BackstopPages)
	}
	if _, err := st.db.ExecContext(ctx, `CREATE TABLE bulk(b BLOB)`); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		fi, err := os.Stat(filepath.Join(dir, dbFile))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	row := bytes.Repeat([]byte{7}, 4000)
	for range 30 {
		if err := st.tx(ctx, func(tx *sql.Tx) error {
			for range 25 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO bulk(b) VALUES(?)`, row); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); size() < before+5<<19; {
		if time.Now().After(deadline) {
			t.Fatalf("relay.db is %d bytes after 3 MB committed (%d before): the WAL was not checkpointed (%d checkpoints run, %d failed)",
				size(), before, st.ckpt.Runs(), st.ckpt.Failures())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
