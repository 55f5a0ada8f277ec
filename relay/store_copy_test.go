package relay

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/pgtest"
)

// TestCopyStoreMovesARelay moves a relay that ran on its relay.db to a new
// store (PostgreSQL, and another SQLite file) and starts it there on the
// same data directory: the agent connects with the credentials it had,
// its unfinished command comes again, finished ones keep their results,
// the events are there with their sequences, and a new event is numbered
// after every cursor handed out before. The copy is refused while the old
// relay serves, and into a store that has rows.
func TestCopyStoreMovesARelay(t *testing.T) {
	for _, to := range []string{"postgres", "sqlite"} {
		t.Run(to, func(t *testing.T) {
			dir := t.TempDir()
			var dest string
			if to == "postgres" {
				dest = pgtest.Database(t)
			} else {
				dest = filepath.Join(t.TempDir(), "copy.db")
			}
			testCopyStore(t, dir, dest)
		})
	}
}

func testCopyStore(t *testing.T, dir, dest string) {
	ctx := context.Background()
	src := Storage{DataDir: dir, Store: filepath.Join(dir, dbFile)}
	srv1 := startRelay(t, dir, Options{Store: src.Store})
	a := busyAgent(t, srv1)
	if _, _, err := srv1.CreateAPIToken(ctx, []string{"+15550001"}, false); err != nil {
		t.Fatal(err)
	}

	if _, err := CopyStore(ctx, src, Storage{Store: dest}, time.Now(), nil); !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("copy while the relay serves = %v; want ErrStoreInUse", err)
	}
	a.close()
	if err := srv1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyStore(ctx, src, src, time.Now(), nil); !errors.Is(err, ErrSameStore) {
		t.Fatalf("copy onto itself = %v; want ErrSameStore", err)
	}
	var heard []string
	rep, err := CopyStore(ctx, src, Storage{Store: dest}, time.Now(), func(tr TableRows) { heard = append(heard, tr.Name) })
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int64{}
	for _, tr := range rep.Tables {
		rows[tr.Name] = tr.Rows
	}
	if rows["agents"] != 1 || rows["commands"] != 2 || rows["events"] != 3 || rows["api_tokens"] != 1 || rows["line_bindings"] != 1 || rows["project_tokens"] != 1 || rep.EventHead != 3 {
		t.Fatalf("copy report %+v", rep)
	}
	if !slices.Equal(heard, copiedTables) {
		t.Fatalf("progress heard %v, want every table in order %v", heard, copiedTables)
	}
	if _, err := CopyStore(ctx, src, Storage{Store: dest}, time.Now(), nil); !errors.Is(err, ErrStoreNotEmpty) {
		t.Fatalf("a second copy into the same store = %v; want ErrStoreNotEmpty", err)
	}

	srv2 := startRelay(t, dir, Options{Store: dest})
	if v := getCommand(t, srv2, "done"); v.State != "succeeded" || v.Result == nil {
		t.Fatalf("done after the move %+v", v)
	}
	if p := getEvents(t, srv2, "after=0"); len(p.Events) != 3 {
		t.Fatalf("%d events after the move", len(p.Events))
	}
	a.redial(srv2)
	if w := a.connect(); w.GetStoredEventSequence() != 3 {
		t.Fatalf("stored sequence %d after the move", w.GetStoredEventSequence())
	}
	if id := a.nextCommand().GetId(); id != "running" {
		t.Fatalf("redelivered %q, want running", id)
	}
	postCommand(t, srv2, sendText("after", "+15550001"))
	if id := a.nextCommand().GetId(); id != "after" {
		t.Fatalf("dispatched %q, want after", id)
	}
	a.succeed("after", "g-after")
	waitState(t, srv2, "after", "succeeded")
	a.event(4, "k4", "after")
	if got := a.nextAck(); got != 4 {
		t.Fatalf("ack %d, want 4", got)
	}
	p := getEvents(t, srv2, "after=3")
	if len(p.Events) != 1 || eventText(t, p.Events[0]) != "after" || p.Events[0].Seq <= 3 {
		t.Fatalf("events after the old cursor: %+v", p.Events)
	}
}

// TestCopyStoreKeepsTheEventHead copies a relay.db whose events all went
// without a pruning mark (as pruning did before schema 4) to PostgreSQL,
// which reads its head from the rows: the head stays where SQLite's
// counter had it, so the old cursors are not from the future, and the
// next event is numbered after them.
func TestCopyStoreKeepsTheEventHead(t *testing.T) {
	ctx := context.Background()
	dest := pgtest.Database(t)
	dir := t.TempDir()
	src := Storage{DataDir: dir, Store: filepath.Join(dir, dbFile)}
	srv := startRelay(t, dir, Options{Store: src.Store})
	a := busyAgent(t, srv)
	a.close()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.db.ExecContext(ctx, `DELETE FROM events`); err != nil {
		t.Fatal(err)
	}
	st.close()
	rep, err := CopyStore(ctx, src, Storage{Store: dest}, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.EventHead != 3 {
		t.Fatalf("the source's head is %d, want 3", rep.EventHead)
	}
	pg, err := openStoreAt("", dest)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.close()
	head, err := pg.eventHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if head != 3 {
		t.Fatalf("PostgreSQL's event head after the copy is %d, want 3 (the source's)", head)
	}
	if through, err := pg.prunedThrough(ctx, []string{lineKey("+15550001")}); err != nil || through != 0 {
		t.Fatalf("the line's pruned sequence after the copy = %d, %v; want 0: the head's mark is no line's", through, err)
	}
}

// TestCopyStoreCoversEveryTable fails when a migration adds a table that
// store copy neither copies nor leaves out on purpose: a move would lose
// it silently.
func TestCopyStoreCoversEveryTable(t *testing.T) {
	check := func(t *testing.T, st *store, q string) {
		rows, err := st.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(copiedTables, name) && !slices.Contains(notCopiedTables, name) {
				t.Errorf("table %s is neither in copiedTables nor in notCopiedTables", name)
			}
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		st, err := openStore(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer st.close()
		// sqlite_sequence exists once an AUTOINCREMENT table has had a row.
		check(t, st, `SELECT name FROM sqlite_master WHERE type = 'table'`)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := openPostgres(pgtest.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.close()
		check(t, st, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`)
	})
}
