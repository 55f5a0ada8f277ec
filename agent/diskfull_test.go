package agent

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/groupcommit"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// capJournalForTest stops state.db from growing: from now on every write
// that needs a new page fails with SQLite's own SQLITE_FULL, "database or
// disk is full", which is what a full disk gives. max_page_count belongs to a
// connection, so the pool is pinned to one. lift removes the cap.
func capJournalForTest(t *testing.T, j *Journal) (lift func()) {
	t.Helper()
	j.db.SetMaxOpenConns(1)
	var pages int64
	if err := j.db.QueryRow(`PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := j.db.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := j.db.Exec(`PRAGMA max_page_count = 1073741823`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFullDiskAnswersUnavailableAndReportsJournalDown: when the journal
// cannot record a command, the command is not run and not recorded, the
// relay hears UNAVAILABLE with the reason at once (not a deadline later),
// and health says the journal is DOWN until a write succeeds again.
func TestFullDiskAnswersUnavailableAndReportsJournalDown(t *testing.T) {
	ctx := context.Background()
	j, d, drv, out := journalDispatcher(t)
	a := &Agent{journal: j}
	if c := a.journalComponent(); c.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("journal before the disk filled: %v", c)
	}

	lift := capJournalForTest(t, j)
	big := sendText("full-1")
	big.GetSendText().Text = strings.Repeat("a long text ", 2000) // overflow pages: the write must grow the file
	d.Submit(ctx, big)
	res := out.result(t, "full-1", 5*time.Second)
	if e := res.GetError(); e.GetCode() != linev1.ErrorCode_ERROR_CODE_UNAVAILABLE ||
		!strings.Contains(e.GetMessage(), "could not record the command") || !strings.Contains(e.GetMessage(), "full") {
		t.Fatalf("result %v; want UNAVAILABLE saying the command could not be recorded (disk full)", res)
	}
	if drv.count("full-1") != 0 {
		t.Fatal("a command the journal could not record was run")
	}
	if rec, err := j.Lookup(ctx, "full-1"); err != nil || rec != nil {
		t.Fatalf("the unrecorded command is in the journal: %+v %v", rec, err)
	}
	rep := a.health(nil)("hc-1")
	var jc *linev1.HealthComponent
	for _, c := range rep.GetComponents() {
		if c.GetName() == "journal" {
			jc = c
		}
	}
	if jc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(jc.GetDetail(), "full") ||
		rep.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN {
		t.Fatalf("health %v; want the journal DOWN with the write error", rep)
	}

	// Space again: the next write succeeds and health recovers.
	lift()
	d.Submit(ctx, sendText("full-2"))
	if res := out.result(t, "full-2", 5*time.Second); res.GetSnapshot() == nil {
		t.Fatalf("after space came back: %v", res)
	}
	if c := a.journalComponent(); c.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("journal after a successful write: %v", c)
	}
}

// TestWriteThatAbortsTheTransactionFailsAlone: SQLite rolls the whole
// transaction back on SQLITE_FULL; the other writes of the group must not
// fail with it (or be told they failed for another reason).
func TestWriteThatAbortsTheTransactionFailsAlone(t *testing.T) {
	ctx := context.Background()
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := j.Begin(ctx, testCommand("small")); err != nil {
		t.Fatal(err)
	}
	lift := capJournalForTest(t, j)
	defer lift()
	big := testCommand("big")
	big.GetSendText().Text = strings.Repeat("a long text ", 2000)
	// One group (queued together, they share a transaction): a write that
	// fits, the one that cannot, another that fits.
	ops := []*groupcommit.Job{
		groupcommit.NewJob(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE commands SET updated_at = 1 WHERE id = 'small'`)
			return err
		}),
		groupcommit.NewJob(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO commands(id, line, kind, chat, state, command, received_at, updated_at) VALUES('big', '', '', '', 'accepted', ?, 0, 0)`, []byte(big.GetSendText().GetText()))
			return err
		}),
		groupcommit.NewJob(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE commands SET updated_at = 2 WHERE id = 'small'`)
			return err
		}),
	}
	if err := j.w.Queue(ops...); err != nil {
		t.Fatal(err)
	}
	if err := ops[1].Wait(); err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("the write that needs room: %v; want SQLite's disk full", err)
	}
	for _, i := range []int{0, 2} {
		if err := ops[i].Wait(); err != nil {
			t.Fatalf("write %d of the group failed with the one that needed room: %v", i, err)
		}
	}
	var at int64
	if err := j.db.QueryRow(`SELECT updated_at FROM commands WHERE id = 'small'`).Scan(&at); err != nil || at != 2 {
		t.Fatalf("updated_at %d, %v; want 2: the writes around the failed one are durable", at, err)
	}
}
