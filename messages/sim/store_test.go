package sim

import (
	"context"
	"database/sql"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/pkg/editinfo"
	"github.com/line-agent/line-agent/pkg/typedstream"
	"howett.net/plist"
)

var t0 = time.Date(2025, 11, 20, 12, 0, 0, 0, time.UTC)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { c.t = c.t.Add(time.Millisecond); return c.t }

func newStore(t *testing.T, opts ...StoreOption) (*Store, *sql.DB) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chat.db")
	clk := &fakeClock{t: t0}
	st, err := Create(path, append([]StoreOption{WithClock(clk.now), WithSeed(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ro, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	return st, ro
}

var uuidRE = regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)

func TestRowsLookLikeApples(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t)
	var mode string
	ro.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	if mode != "wal" {
		t.Fatalf("journal_mode %q", mode)
	}
	c, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551234567"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.GUID != "iMessage;-;+15551234567" || c.Style != StyleOneToOne {
		t.Fatalf("chat %+v", c)
	}
	again, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551234567"}})
	if err != nil || again.RowID != c.RowID {
		t.Fatalf("EnsureChat not idempotent: %+v %v", again, err)
	}
	row, err := st.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if !uuidRE.MatchString(row.GUID) {
		t.Fatalf("guid %q", row.GUID)
	}
	var (
		text                           sql.NullString
		body                           []byte
		date, isSent, isDel, fromMe    int64
		account, dest, service, chatID string
		msgDate                        int64
	)
	q := `SELECT m.text, m.attributedBody, m.date, m.is_sent, m.is_delivered, m.is_from_me, m.account, m.destination_caller_id, m.service, c.guid, j.message_date
		FROM message m JOIN chat_message_join j ON j.message_id = m.ROWID JOIN chat c ON c.ROWID = j.chat_id WHERE m.guid = ?`
	if err := ro.QueryRow(q, row.GUID).Scan(&text, &body, &date, &isSent, &isDel, &fromMe, &account, &dest, &service, &chatID, &msgDate); err != nil {
		t.Fatal(err)
	}
	if text.Valid {
		t.Errorf("text should be NULL, got %q", text.String)
	}
	as, err := typedstream.Decode(body)
	if err != nil || as.Text != "hello" {
		t.Errorf("attributedBody decodes to %+v, %v", as, err)
	}
	if got := chatdb.FromAppleTime(date); got.Before(t0) || got.After(t0.Add(time.Second)) {
		t.Errorf("date %d = %v", date, got)
	}
	if isSent != 0 || isDel != 0 || fromMe != 1 || account != "p:+15550000001" || dest != "+15550000001" || service != "iMessage" || chatID != c.GUID || msgDate != date {
		t.Errorf("row: sent=%d delivered=%d from_me=%d account=%q dest=%q service=%q chat=%q message_date=%d", isSent, isDel, fromMe, account, dest, service, chatID, msgDate)
	}
	if err := st.MarkSent(ctx, row.GUID); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkDelivered(ctx, row.GUID); err != nil {
		t.Fatal(err)
	}
	var dd int64
	ro.QueryRow(`SELECT is_sent, is_delivered, date_delivered FROM message WHERE guid = ?`, row.GUID).Scan(&isSent, &isDel, &dd)
	if isSent != 1 || isDel != 1 || dd == 0 {
		t.Errorf("after updates: sent=%d delivered=%d date_delivered=%d", isSent, isDel, dd)
	}
	var n int
	ro.QueryRow(`SELECT count(*) FROM message`).Scan(&n)
	if n != 1 {
		t.Errorf("updates must be in place: %d rows", n)
	}
}

func TestWithTextFillsText(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t, WithText(true))
	c, _ := st.EnsureChat(ctx, ChatSpec{Participants: []string{"a@example.com"}})
	row, err := st.Insert(ctx, Msg{Chat: c.GUID, Text: "old mac"})
	if err != nil {
		t.Fatal(err)
	}
	var text string
	var hid int64
	ro.QueryRow(`SELECT text, handle_id FROM message WHERE ROWID = ?`, row.RowID).Scan(&text, &hid)
	if text != "old mac" || hid == 0 {
		t.Errorf("text %q handle %d", text, hid)
	}
}

func TestTapbackReplacesOlder(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t)
	c, _ := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551234567"}})
	orig, _ := st.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Text: "hi"})
	if _, err := st.Insert(ctx, Msg{Chat: c.GUID, Tapback: &Tapback{Target: orig.GUID, Code: 2000}}); err != nil {
		t.Fatal(err)
	}
	like, err := st.Insert(ctx, Msg{Chat: c.GUID, Tapback: &Tapback{Target: orig.GUID, Code: 2001}})
	if err != nil {
		t.Fatal(err)
	}
	// Mine does not replace theirs.
	if _, err := st.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Tapback: &Tapback{Target: orig.GUID, Code: 2006, Emoji: "🎉"}}); err != nil {
		t.Fatal(err)
	}
	var n int
	ro.QueryRow(`SELECT count(*) FROM message WHERE associated_message_guid = ?`, "p:0/"+orig.GUID).Scan(&n)
	if n != 2 {
		t.Fatalf("%d tapback rows, want 2", n)
	}
	var typ int
	ro.QueryRow(`SELECT associated_message_type FROM message WHERE associated_message_guid = ? AND is_from_me = 0`, "p:0/"+orig.GUID).Scan(&typ)
	var guid string
	ro.QueryRow(`SELECT guid FROM message WHERE associated_message_guid = ? AND is_from_me = 0`, "p:0/"+orig.GUID).Scan(&guid)
	if typ != 2001 || guid != like.GUID {
		t.Errorf("survivor type %d guid %s", typ, guid)
	}
	ro.QueryRow(`SELECT count(*) FROM chat_message_join`).Scan(&n)
	if n != 3 {
		t.Errorf("%d joins, want 3 (deleted tapback unjoined)", n)
	}
}

func TestEditUnsendInPlace(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t)
	c, _ := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551234567"}})
	r, _ := st.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Text: "helo", Sent: true})
	if err := st.Edit(ctx, r.GUID, 0, "hello"); err != nil {
		t.Fatal(err)
	}
	var body, info []byte
	var edited int64
	ro.QueryRow(`SELECT attributedBody, message_summary_info, date_edited FROM message WHERE guid = ?`, r.GUID).Scan(&body, &info, &edited)
	as, _ := typedstream.Decode(body)
	sum, err := editinfo.Decode(info)
	if err != nil || as.Text != "hello" || edited == 0 || len(sum.Parts[0]) != 2 || sum.Parts[0][0].Text != "helo" || sum.Parts[0][1].Text != "hello" {
		t.Fatalf("edit: body %q edited %d summary %+v err %v", as.Text, edited, sum, err)
	}
	if err := st.Unsend(ctx, r.GUID, 0); err != nil {
		t.Fatal(err)
	}
	var retracted int64
	body = nil
	ro.QueryRow(`SELECT attributedBody, message_summary_info, date_retracted FROM message WHERE guid = ?`, r.GUID).Scan(&body, &info, &retracted)
	sum, err = editinfo.Decode(info)
	if err != nil || body != nil || retracted == 0 || len(sum.Unsent) != 1 || sum.Unsent[0] != 0 {
		t.Fatalf("unsend: body %v retracted %d summary %+v err %v", body, retracted, sum, err)
	}
}

func TestGroupsBackgroundsAttachments(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t)
	g, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551110001", "+15551110002"}, DisplayName: "Team"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Style != StyleGroup || !regexp.MustCompile(`^iMessage;\+;chat\d+$`).MatchString(g.GUID) {
		t.Fatalf("group %+v", g)
	}
	same, _ := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551110002", "+15551110001"}})
	if same.GUID != g.GUID {
		t.Errorf("group not found by participants: %s vs %s", same.GUID, g.GUID)
	}
	if _, err := st.RenameGroup(ctx, g.GUID, "+15551110001", "New name"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddParticipant(ctx, g.GUID, "", "+15551110003"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SetBackground(ctx, g.GUID, "", Background{AssetID: "A1", URL: "https://cvws.icloud-content.com/x", Size: 1234, Version: 1}); err != nil {
		t.Fatal(err)
	}
	var props []byte
	ro.QueryRow(`SELECT properties FROM chat WHERE guid = ?`, g.GUID).Scan(&props)
	var p map[string]any
	if _, err := plist.Unmarshal(props, &p); err != nil {
		t.Fatal(err)
	}
	bp, _ := p["backgroundProperties"].(map[string]any)
	if bp["trabaid"] != "A1" {
		t.Errorf("properties %v", p)
	}
	if _, err := st.ClearBackground(ctx, g.GUID, ""); err != nil {
		t.Fatal(err)
	}
	rows, _ := ro.Query(`SELECT item_type, group_action_type, other_handle, coalesce(group_title,'') FROM message ORDER BY ROWID`)
	var got [][4]any
	for rows.Next() {
		var a, b, c int
		var d string
		rows.Scan(&a, &b, &c, &d)
		got = append(got, [4]any{a, b, c > 0, d})
	}
	rows.Close()
	want := [][4]any{{2, 0, false, "New name"}, {1, 0, true, ""}, {3, 4, false, ""}, {3, 6, false, ""}}
	if len(got) != len(want) {
		t.Fatalf("group rows %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d: %v want %v", i, got[i], want[i])
		}
	}
	r, err := st.Insert(ctx, Msg{Chat: g.GUID, Sender: "+15551110002", Text: "look", Attachments: []Attachment{{Name: "cat.jpg", MIME: "image/jpeg", Size: 42}}})
	if err != nil {
		t.Fatal(err)
	}
	var fn, mime string
	var ts, size, has int
	ro.QueryRow(`SELECT a.filename, a.mime_type, a.transfer_state, a.total_bytes, m.cache_has_attachments FROM attachment a JOIN message_attachment_join j ON j.attachment_id = a.ROWID JOIN message m ON m.ROWID = j.message_id WHERE j.message_id = ?`, r.RowID).Scan(&fn, &mime, &ts, &size, &has)
	if !regexp.MustCompile(`^~/Library/Messages/Attachments/.+/cat\.jpg$`).MatchString(fn) || mime != "image/jpeg" || ts != 5 || size != 42 || has != 1 {
		t.Errorf("attachment %q %q %d %d %d", fn, mime, ts, size, has)
	}
}

func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t)
	c, _ := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551234567"}})
	const workers, each = 8, 25
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				r, err := st.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Text: "x"})
				if err == nil {
					err = st.MarkSent(ctx, r.GUID)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var n, sent int
	ro.QueryRow(`SELECT count(*), sum(is_sent) FROM message`).Scan(&n, &sent)
	if n != workers*each || sent != n {
		t.Errorf("%d rows, %d sent", n, sent)
	}
}

func TestReplyAndHistory(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t)
	c, _ := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551234567"}})
	orig, _ := st.Insert(ctx, Msg{Chat: c.GUID, Text: "héllo 👋"})
	r, err := st.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Text: "hi", ReplyTo: orig.GUID})
	if err != nil {
		t.Fatal(err)
	}
	var guid, part string
	ro.QueryRow(`SELECT thread_originator_guid, thread_originator_part FROM message WHERE ROWID = ?`, r.RowID).Scan(&guid, &part)
	if guid != orig.GUID || part != "0:0:8" {
		t.Errorf("reply %s %q", guid, part)
	}
	rows, err := st.InsertHistorical(ctx, 30*24*time.Hour, []Msg{{Chat: c.GUID, Text: "old"}, {Chat: c.GUID, Text: "older", FromMe: true}})
	if err != nil {
		t.Fatal(err)
	}
	var date int64
	ro.QueryRow(`SELECT date FROM message WHERE ROWID = ?`, rows[0].RowID).Scan(&date)
	if rows[0].RowID <= r.RowID || chatdb.FromAppleTime(date).After(t0.Add(-29*24*time.Hour)) {
		t.Errorf("history row %d dated %v", rows[0].RowID, chatdb.FromAppleTime(date))
	}
}

// A send the last run left half-done (the row written, not yet sent) is
// finished when the simulated Messages starts again, as a relaunched
// Messages drains its queue; failed rows and incoming rows stay as they
// are.
func TestRelaunchFinishesPendingSends(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m, err := New(ctx, Options{Dir: dir, Logger: quiet, Remote: RemoteOptions{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.Store.EnsureChat(ctx, ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := m.Store.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Text: "half sent"})
	if err != nil {
		t.Fatal(err)
	}
	failed, err := m.Store.Insert(ctx, Msg{Chat: c.GUID, FromMe: true, Text: "failed", Error: 22})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()

	m, err = New(ctx, Options{Dir: dir, Logger: quiet, Remote: RemoteOptions{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	state := func(guid string) (sent, delivered bool) {
		if err := m.Store.db.QueryRowContext(ctx, `SELECT is_sent, is_delivered FROM message WHERE guid = ?`, guid).Scan(&sent, &delivered); err != nil {
			t.Fatal(err)
		}
		return sent, delivered
	}
	if s, d := state(pending.GUID); !s || !d {
		t.Errorf("the half-sent row after the relaunch: sent %v delivered %v, want both", s, d)
	}
	if s, _ := state(failed.GUID); s {
		t.Error("a failed row was marked sent")
	}
}
