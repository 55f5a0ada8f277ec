package chatdb_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestWALRecreatedWithNewInode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	a, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "before"})
	e.sink.waitKeys(t, wait, key(a.GUID, "message", "0"))
	before := inode(t, e.path+"-wal")
	for round := 0; round < 3; round++ {
		must(t, e.store.RecreateWAL(ctx))
		after := inode(t, e.path+"-wal")
		if after == before {
			t.Fatalf("round %d: WAL kept inode %d", round, after)
		}
		before = after
		var keys []string
		for i := 0; i < 5; i++ {
			r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: fmt.Sprintf("after %d.%d", round, i)})
			must(t, err)
			keys = append(keys, key(r.GUID, "message", "0"))
		}
		e.sink.waitKeys(t, 3*time.Second, keys...)
	}
	evs, _ := e.sink.snapshot()
	noDuplicates(t, evs)
	if got := e.tail.Stats().BackstopCatches; got != 0 {
		t.Errorf("the watcher went deaf after WAL re-creation: backstop caught %d", got)
	}
}

func TestCheckpoints(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	var keys []string
	for i, mode := range []sim.CheckpointMode{sim.CheckpointPassive, sim.CheckpointFull, sim.CheckpointRestart, sim.CheckpointTruncate} {
		r, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: fmt.Sprint("c", i)})
		must(t, e.store.Checkpoint(ctx, mode))
		must(t, e.store.MarkSent(ctx, r.GUID))
		must(t, e.store.Checkpoint(ctx, mode))
		keys = append(keys, key(r.GUID, "message", "0"), key(r.GUID, "sent", "0"))
	}
	e.sink.waitKeys(t, 3*time.Second, keys...)
	evs, _ := e.sink.snapshot()
	noDuplicates(t, evs)
}

func TestTenThousandRowsInOneTransaction(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	const n = 10_000
	msgs := make([]sim.Msg, n)
	for i := range msgs {
		msgs[i] = sim.Msg{Chat: e.chat.GUID, Text: fmt.Sprint("burst ", i)}
	}
	rows, err := e.store.InsertBatch(ctx, msgs)
	must(t, err)
	evs := e.sink.waitCount(t, 60*time.Second, n)
	time.Sleep(50 * time.Millisecond)
	evs, _ = e.sink.snapshot()
	if len(evs) != n {
		t.Errorf("%d events, want %d", len(evs), n)
	}
	noDuplicates(t, evs)
	for i, ev := range evs {
		if ev.GetMessageGuid() != rows[i].GUID {
			t.Fatalf("event %d is %s, want %s (in ROWID order)", i, ev.GetMessageGuid(), rows[i].GUID)
		}
	}
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	for _, b := range e.sink.batches {
		if b > 1000 {
			t.Errorf("a batch of %d events: batches must be bounded", b)
		}
	}
	if len(e.sink.batches) < n/1000 {
		t.Errorf("%d commits for %d rows", len(e.sink.batches), n)
	}
}

func TestICloudHistoryIsFlagged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	live, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "live"})
	e.sink.waitKeys(t, wait, key(live.GUID, "message", "0"))
	hist := make([]sim.Msg, 300)
	for i := range hist {
		hist[i] = sim.Msg{Chat: e.chat.GUID, Text: fmt.Sprint("old ", i), FromMe: i%2 == 0}
	}
	rows, err := e.store.InsertHistorical(ctx, 30*24*time.Hour, hist)
	must(t, err)
	if rows[0].RowID <= live.RowID {
		t.Fatal("history must arrive with new ROWIDs")
	}
	after, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "live again"})
	m := e.sink.waitKeys(t, wait, key(after.GUID, "message", "0"), key(rows[len(rows)-1].GUID, "message", "0"))
	for _, r := range rows {
		ev := m[key(r.GUID, "message", "0")]
		if ev == nil || !ev.GetHistorical() {
			t.Fatalf("history row %s: %v", r.GUID, ev)
		}
	}
	if m[key(after.GUID, "message", "0")].GetHistorical() || m[key(live.GUID, "message", "0")].GetHistorical() {
		t.Error("a live message was flagged historical")
	}
}

func TestSkipHistorical(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, func(o *chatdb.TailerOptions) { o.SkipHistorical = true })
	_, err := e.store.InsertHistorical(ctx, 30*24*time.Hour, []sim.Msg{{Chat: e.chat.GUID, Text: "old"}})
	must(t, err)
	live, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "live"})
	e.sink.waitKeys(t, wait, key(live.GUID, "message", "0"))
	if evs, _ := e.sink.snapshot(); len(evs) != 1 {
		t.Errorf("%d events, want only the live one", len(evs))
	}
}

func TestDatabaseReplacedWholesale(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	var old []sim.Row
	var oldMsgs []sim.Msg
	for i := 0; i < 20; i++ {
		m := sim.Msg{Chat: e.chat.GUID, Text: fmt.Sprint("before ", i), Date: time.Now().Add(-time.Duration(20-i) * time.Minute)}
		r, _ := e.store.Insert(ctx, m)
		m.GUID = r.GUID
		old = append(old, r)
		oldMsgs = append(oldMsgs, m)
	}
	e.sink.waitKeys(t, wait, key(old[len(old)-1].GUID, "message", "0"))
	beforeID := inode(t, e.path)
	var fresh sim.Row
	must(t, e.store.ReplaceDatabase(ctx, true, func(ctx context.Context, st *sim.Store) error {
		// The restored file: the same messages under new ROWIDs (padded so
		// they even outnumber the old ones), plus one that is news.
		pad := make([]sim.Msg, 50)
		for i := range pad {
			pad[i] = sim.Msg{Chat: e.chat.GUID, Text: "padding", Date: time.Now().Add(-48 * time.Hour)}
		}
		if _, err := st.InsertBatch(ctx, pad); err != nil {
			return err
		}
		if _, err := st.InsertBatch(ctx, oldMsgs); err != nil {
			return err
		}
		var err error
		fresh, err = st.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "news after the restore"})
		return err
	}))
	if inode(t, e.path) == beforeID {
		t.Fatal("chat.db was not replaced")
	}
	m := e.sink.waitKeys(t, wait, key(fresh.GUID, "message", "0"))
	after, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "and later"})
	m = e.sink.waitKeys(t, wait, key(after.GUID, "message", "0"))
	evs, _ := e.sink.snapshot()
	noDuplicates(t, evs)
	if len(evs) != len(old)+2 {
		t.Errorf("%d events, want %d (old rows must not be re-emitted): %v", len(evs), len(old)+2, sortedKeys(m))
	}
	if e.tail.Stats().Rebases != 1 {
		t.Errorf("rebases %d", e.tail.Stats().Rebases)
	}
	if h := e.tail.Health(); !strings.Contains(h.GetDetail(), "replaced") {
		t.Errorf("health should mention the replacement: %v", h)
	}
}

func TestDeafWatcherBackstop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, func(o *chatdb.TailerOptions) { o.DisableWatcher = true })
	time.Sleep(1100 * time.Millisecond) // let a quiet backstop tick pass
	if e.tail.Stats().BackstopCatches != 0 {
		t.Error("backstop counted a change when nothing changed")
	}
	r, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "nobody told the watcher"})
	// The backstop checks once a second: the row arrives within about 1 s.
	e.sink.waitKeys(t, 1500*time.Millisecond, key(r.GUID, "message", "0"))
	// The sink sees the event inside the tailer's commit; the tailer counts
	// the catch after the commit returns, so health may lag by a moment.
	deadline := time.Now().Add(2 * time.Second)
	for {
		h := e.tail.Health()
		if h.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_DEGRADED && strings.Contains(h.GetDetail(), "missed: 1 times") && h.GetName() == "chatdb" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %v", h)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHealthOK(t *testing.T) {
	e := newEnv(t)
	e.start(t, nil, nil)
	deadline := time.Now().Add(wait)
	for {
		h := e.tail.Health()
		if h.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %v", h)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHealthDownWhenChatDBMissing(t *testing.T) {
	leakCheck(t)
	tl := chatdb.NewTailer(chatdb.TailerOptions{Path: t.TempDir() + "/missing/chat.db", BackstopInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx, nil, newSink()) }()
	time.Sleep(150 * time.Millisecond)
	if h := tl.Health(); h.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(h.GetDetail(), "cannot open") {
		t.Errorf("health %v", h)
	}
	if err := <-done; err != context.DeadlineExceeded {
		t.Errorf("Run: %v", err)
	}
}

func TestRestartFromCursorExactlyOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	var mine []sim.Row
	for i := 0; i < 10; i++ {
		r, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: fmt.Sprint("out ", i)})
		mine = append(mine, r)
	}
	for _, r := range mine[:5] {
		must(t, e.store.MarkSent(ctx, r.GUID))
	}
	e.sink.waitKeys(t, wait, key(mine[4].GUID, "sent", "0"), key(mine[9].GUID, "message", "0"))
	e.halt()
	first, cursor := e.sink.snapshot()

	// While the agent is down: updates to known rows and new rows.
	for _, r := range mine[5:] {
		must(t, e.store.MarkSent(ctx, r.GUID))
	}
	for _, r := range mine[:3] {
		must(t, e.store.MarkDelivered(ctx, r.GUID))
	}
	var later []sim.Row
	for i := 0; i < 5; i++ {
		r, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: fmt.Sprint("while down ", i)})
		later = append(later, r)
	}

	e.sink = newSink()
	e.start(t, cursor, nil)
	var want []string
	for _, r := range mine[5:] {
		want = append(want, key(r.GUID, "sent", "0"))
	}
	for _, r := range mine[:3] {
		want = append(want, key(r.GUID, "delivered", "0"))
	}
	for _, r := range later {
		want = append(want, key(r.GUID, "message", "0"))
	}
	e.sink.waitKeys(t, wait, want...)
	time.Sleep(100 * time.Millisecond)
	second, _ := e.sink.snapshot()
	noDuplicates(t, append(first, second...))
	if len(second) != len(want) {
		t.Errorf("after restart %d events, want %d", len(second), len(want))
	}
	// Messages that arrived while the agent was down are news, not history.
	for _, ev := range second {
		if ev.GetHistorical() {
			t.Errorf("%s flagged historical", ev.GetKey())
		}
	}
}

func TestBadCursorRejected(t *testing.T) {
	e := newEnv(t)
	tl := chatdb.NewTailer(chatdb.TailerOptions{Path: e.path})
	if err := tl.Run(context.Background(), []byte(`{"v":99}`), newSink()); err == nil {
		t.Error("a cursor of another version was accepted")
	}
	if err := tl.Run(context.Background(), []byte(`garbage`), newSink()); err == nil {
		t.Error("garbage accepted")
	}
}

// TestOldSchema runs against a chat.db from an older macOS, without the
// columns newer versions added.
func TestOldSchema(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	path := dir + "/chat.db"
	schema := sim.Schema()
	for _, col := range []string{"date_edited INTEGER DEFAULT 0", "date_retracted INTEGER DEFAULT 0", "associated_message_emoji TEXT DEFAULT NULL", "thread_originator_guid TEXT", "destination_caller_id TEXT"} {
		if !strings.Contains(schema, ", "+col) {
			t.Fatalf("schema has no %q", col)
		}
		schema = strings.Replace(schema, ", "+col, "", 1)
	}
	schema = strings.Replace(schema, "CREATE INDEX message_idx_thread_originator_guid ON message(thread_originator_guid);", "", 1)
	w, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	must(t, err)
	defer w.Close()
	w.SetMaxOpenConns(1)
	_, err = w.Exec(schema)
	must(t, err)
	_, err = w.Exec(`INSERT INTO chat (guid, style, chat_identifier, service_name, account_login) VALUES ('SMS;-;+15557654321', 45, '+15557654321', 'SMS', 'P:+15550000009');
		INSERT INTO handle (id, service) VALUES ('+15557654321', 'SMS')`)
	must(t, err)

	r, err := chatdb.Open(path, chatdb.Options{})
	must(t, err)
	defer r.Close()
	for _, c := range []string{"date_edited", "date_retracted", "associated_message_emoji", "thread_originator_guid", "destination_caller_id"} {
		if r.HasColumn("message", c) {
			t.Errorf("HasColumn(%s) true", c)
		}
	}

	s := newSink()
	tl := chatdb.NewTailer(chatdb.TailerOptions{Path: path, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx, nil, s) }()
	defer func() { cancel(); <-done }()
	s.waitCommits(t, wait, 1)

	date := chatdb.ToAppleTime(time.Now())
	tx, err := w.Begin()
	must(t, err)
	_, err = tx.Exec(`INSERT INTO message (guid, text, handle_id, service, account, date, is_from_me, is_finished, is_delivered) VALUES ('OLD-1', 'plain text column', 1, 'SMS', 'p:+15550000009', ?, 0, 1, 1)`, date)
	must(t, err)
	_, err = tx.Exec(`INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (1, 1, ?)`, date)
	must(t, err)
	must(t, tx.Commit())
	m := s.waitKeys(t, wait, "OLD-1/message/0")
	ev := m["OLD-1/message/0"]
	if ev.GetMessage().GetText() != "plain text column" || ev.GetLine() != "+15550000009" || ev.GetChatGuid() != "SMS;-;+15557654321" || ev.GetMessage().GetService() != "SMS" {
		t.Errorf("event %v", ev)
	}
	_, err = w.Exec(`UPDATE message SET is_read = 1, date_read = ? WHERE guid = 'OLD-1'`, date)
	must(t, err)
	s.waitKeys(t, wait, "OLD-1/read/0")
}

func TestLookupAndFindOutgoing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	since := time.Now().Add(-time.Second)
	any1, err := e.store.EnsureChat(ctx, sim.ChatSpec{GUID: "any;-;+15559990000"})
	must(t, err)
	r1, _ := e.store.Insert(ctx, sim.Msg{Chat: any1.GUID, FromMe: true, Text: "same text"})
	r2, _ := e.store.Insert(ctx, sim.Msg{Chat: any1.GUID, FromMe: true, Text: "other"})
	must(t, e.store.MarkSent(ctx, r2.GUID))
	rd, err := chatdb.Open(e.path, chatdb.Options{})
	must(t, err)
	defer rd.Close()
	st, err := rd.FindOutgoing(ctx, "iMessage;-;+15559990000", " other ", chatdb.Window{Since: since})
	must(t, err)
	if st.GUID != r2.GUID || !st.Sent || st.ChatGUID != "any;-;+15559990000" || st.Text != "other" {
		t.Errorf("FindOutgoing %+v", st)
	}
	if _, err := rd.FindOutgoing(ctx, any1.GUID, "same text", chatdb.Window{Since: time.Now().Add(time.Hour)}); err == nil {
		t.Error("found a row dated before since")
	}
	st, err = rd.LookupMessage(ctx, r1.GUID)
	must(t, err)
	if st.Sent || !st.FromMe || st.Text != "same text" {
		t.Errorf("LookupMessage %+v", st)
	}
	must(t, e.store.SetError(ctx, r1.GUID, 4))
	st, _ = rd.LookupMessage(ctx, r1.GUID)
	if st.Error != 4 || !st.Finished {
		t.Errorf("after failure %+v", st)
	}
	if _, err := rd.LookupMessage(ctx, "NOPE"); err == nil || !errorsIs(err, chatdb.ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
}

func TestReaderNeverWrites(t *testing.T) {
	e := newEnv(t)
	rd, err := chatdb.Open(e.path, chatdb.Options{})
	must(t, err)
	defer rd.Close()
	// The reader's DSN is what guarantees it; prove it with the same DSN.
	db, err := sql.Open("sqlite", "file:"+e.path+"?mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	must(t, err)
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM message`); err == nil {
		t.Fatal("a read-only connection could write")
	}
}

// TestLookupsDuringWALChurn: drivers look rows up while the tailer runs and
// Messages keeps re-creating its WAL; neither may fail or miss anything.
func TestLookupsDuringWALChurn(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	rd, err := chatdb.Open(e.path, chatdb.Options{Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	defer rd.Close()
	stop := make(chan struct{})
	errs := make(chan error, 1)
	var last atomic.Value // the newest GUID written
	last.Store("")
	go func() {
		defer close(errs)
		for {
			select {
			case <-stop:
				return
			default:
			}
			g := last.Load().(string)
			if g == "" {
				time.Sleep(time.Millisecond)
				continue
			}
			if _, err := rd.LookupMessage(ctx, g); err != nil {
				errs <- fmt.Errorf("lookup of %s: %w", g, err)
				return
			}
		}
	}()
	var keys []string
	for round := 0; round < 4; round++ {
		for i := 0; i < 10; i++ {
			r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: fmt.Sprint(round, i)})
			must(t, err)
			must(t, e.store.MarkSent(ctx, r.GUID))
			last.Store(r.GUID)
			keys = append(keys, key(r.GUID, "message", "0"), key(r.GUID, "sent", "0"))
		}
		must(t, e.store.RecreateWAL(ctx))
	}
	e.sink.waitKeys(t, wait, keys...)
	close(stop)
	if err := <-errs; err != nil {
		t.Error(err)
	}
	evs, _ := e.sink.snapshot()
	noDuplicates(t, evs)
}
