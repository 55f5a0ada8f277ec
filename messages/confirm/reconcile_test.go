package confirm_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// reconcile looks once for cmd as started at start, without a chat.db
// mark (a command a journal recorded before marks were kept), claiming
// claimed.
func reconcile(t *testing.T, c *confirm.Confirmer, cmd *linev1.Command, start time.Time, claimed ...string) confirm.Finding {
	t.Helper()
	return reconcileFrom(t, c, cmd, confirm.Start{At: start}, claimed...)
}

// reconcileFrom is reconcile with the whole start, mark included.
func reconcileFrom(t *testing.T, c *confirm.Confirmer, cmd *linev1.Command, start confirm.Start, claimed ...string) confirm.Finding {
	t.Helper()
	f, err := c.Reconcile(context.Background(), cmd, start, func(g string) bool {
		for _, c := range claimed {
			if c == g {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return f
}

// A send's row: found once sent (with its GUID), pending while only
// written, absent before the window, ambiguous with two identical texts,
// and one again when the other is a recorded result's.
func TestReconcileSendByItsRow(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	cmd := newCommand(chat.GUID, &linev1.SendText{Text: "see you at 8"})
	if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "see you at 8", Sent: true, Date: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if f := reconcile(t, c, cmd, start); f.Verdict != confirm.Absent {
		t.Fatalf("an hour-old identical text counts: %+v", f)
	}
	row, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: " see you at 8\n"})
	if err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, cmd, start); f.Verdict != confirm.Pending || !strings.Contains(f.Seen, row.GUID) {
		t.Fatalf("a written, unsent row: %+v; want Pending naming %s", f, row.GUID)
	}
	if err := st.MarkSent(ctx, row.GUID); err != nil {
		t.Fatal(err)
	}
	f := reconcile(t, c, cmd, start)
	if f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != row.GUID || f.Snapshot.GetChatGuid() != chat.GUID || !f.Snapshot.GetSent() {
		t.Fatalf("the sent row: %+v", f)
	}
	if strings.Contains(f.Seen, "see you") {
		t.Fatalf("Seen repeats the message text: %q", f.Seen)
	}
	twin, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "see you at 8", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, cmd, start); f.Verdict != confirm.Ambiguous || !strings.Contains(f.Seen, row.GUID) || !strings.Contains(f.Seen, twin.GUID) {
		t.Fatalf("two identical texts: %+v; want Ambiguous naming both", f)
	}
	if f := reconcile(t, c, cmd, start, row.GUID); f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != twin.GUID {
		t.Fatalf("with the first claimed by another command: %+v; want the second", f)
	}
}

// A row Messages failed is found with the failure the driver reports.
func TestReconcileSendFailedRow(t *testing.T) {
	st, c, chat := setup(t)
	start := time.Now()
	if _, err := st.Insert(context.Background(), sim.Msg{Chat: chat.GUID, FromMe: true, Text: "nope", Error: 22}); err != nil {
		t.Fatal(err)
	}
	f := reconcile(t, c, newCommand(chat.GUID, &linev1.SendText{Text: "nope"}), start)
	if f.Verdict != confirm.Found || f.Err == nil || f.Err.Code != linev1.ErrorCode_ERROR_CODE_UNAVAILABLE || f.Snapshot != nil {
		t.Fatalf("a failed row: %+v", f)
	}
}

// A send to one participant is looked for in that person's chat; one to
// several (a group only the helper could name) is traceless; a chat
// chat.db does not have holds no row.
func TestReconcileSendTargets(t *testing.T) {
	st, c, chat := setup(t)
	start := time.Now()
	row, err := st.Insert(context.Background(), sim.Msg{Chat: chat.GUID, FromMe: true, Text: "hello", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	one := &linev1.Command{Id: "p", Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"+1 (555) 765-4321"}}},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hello"}}}
	if f := reconcile(t, c, one, start); f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != row.GUID {
		t.Fatalf("send to the participant: %+v", f)
	}
	two := &linev1.Command{Id: "g", Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{peer, "+15557654000"}}},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hello"}}}
	if f := reconcile(t, c, two, start); f.Verdict != confirm.Traceless {
		t.Fatalf("send to two participants: %+v", f)
	}
	if f := reconcile(t, c, newCommand("iMessage;-;+15550009999", &linev1.SendText{Text: "hello"}), start); f.Verdict != confirm.Absent {
		t.Fatalf("send to a chat chat.db lacks: %+v", f)
	}
}

// A tapback, an edit and an unsend are found by the change they make to
// chat.db, and are absent while it is not there.
func TestReconcileTapbackEditUnsend(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	theirs, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: "dinner?"})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "typo", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	react := newCommand(chat.GUID, &linev1.React{MessageGuid: theirs.GUID, Reaction: &linev1.React_Tapback{Tapback: "love"}})
	edit := newCommand(chat.GUID, &linev1.Edit{MessageGuid: mine.GUID, Text: "fixed"})
	unsend := newCommand(chat.GUID, &linev1.Unsend{MessageGuid: mine.GUID})
	for _, cmd := range []*linev1.Command{react, edit, unsend} {
		if f := reconcile(t, c, cmd, start); f.Verdict != confirm.Absent {
			t.Fatalf("%v before anything happened: %+v", cmd.GetKind(), f)
		}
	}
	tb, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true, Tapback: &sim.Tapback{Target: theirs.GUID, Code: 2000}})
	if err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, react, start); f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != tb.GUID {
		t.Fatalf("tapback: %+v; want its row %s", f, tb.GUID)
	}
	if f := reconcile(t, c, react, time.Now().Add(time.Minute)); f.Verdict != confirm.Absent {
		t.Fatalf("a tapback older than the command counts: %+v", f)
	}
	if err := st.Edit(ctx, mine.GUID, 0, "other"); err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, edit, start); f.Verdict != confirm.Pending {
		t.Fatalf("edited to other text: %+v; want Pending", f)
	}
	if err := st.Edit(ctx, mine.GUID, 0, "fixed"); err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, edit, start); f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != mine.GUID {
		t.Fatalf("edit: %+v", f)
	}
	if err := st.Unsend(ctx, mine.GUID, 0); err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, unsend, start); f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != mine.GUID {
		t.Fatalf("unsend: %+v", f)
	}
}

// Read marks and a group's name are found when chat.db shows them; typing
// leaves nothing to find.
func TestReconcileReadNameTyping(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: "unread"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	read := newCommand(chat.GUID, &linev1.MarkRead{})
	if f := reconcile(t, c, read, start); f.Verdict != confirm.Absent {
		t.Fatalf("mark_read with an unread message: %+v", f)
	}
	if _, err := st.MarkChatRead(ctx, chat.GUID); err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, read, start); f.Verdict != confirm.Found || f.Snapshot.GetChatGuid() != chat.GUID {
		t.Fatalf("mark_read once read: %+v", f)
	}
	group, err := st.EnsureChat(ctx, sim.ChatSpec{GUID: "iMessage;+;chat424242", Participants: []string{peer, "+15557654000"}})
	if err != nil {
		t.Fatal(err)
	}
	rename := newCommand(group.GUID, &linev1.RenameGroup{Name: "Team"})
	if f := reconcile(t, c, rename, start); f.Verdict != confirm.Absent {
		t.Fatalf("rename before: %+v", f)
	}
	if _, err := st.RenameGroup(ctx, group.GUID, "", "Team"); err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, rename, start); f.Verdict != confirm.Found {
		t.Fatalf("rename after: %+v", f)
	}
	typing := &linev1.Command{Id: "t", Target: &linev1.Command_ChatGuid{ChatGuid: chat.GUID}, Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}
	if f := reconcile(t, c, typing, start); f.Verdict != confirm.Traceless {
		t.Fatalf("typing: %+v", f)
	}
}

// With the chat.db mark its start recorded, a send is looked for above
// the mark: an identical text from before is not it, whatever its date.
// A clock set back between the start and Messages' row (the row dated
// before the start) makes the command Ambiguous, never Absent: that row
// is either this command's or one that came late from iCloud, and only a
// false NOT_SENT could lose it. The wall-clock window alone reported it
// Absent (the hole the chaos suite found).
func TestReconcileSendByMarkSurvivesAClockSetBack(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	cmd := newCommand(chat.GUID, &linev1.SendText{Text: "on my way"})
	before, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "on my way", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	// The command started a moment later, on a clock a day ahead of the
	// one Messages dates its rows with from then on.
	start := confirm.Start{At: time.Now().Add(24 * time.Hour), Mark: before.RowID, Marked: true}
	if f := reconcileFrom(t, c, cmd, start); f.Verdict != confirm.Absent {
		t.Fatalf("only an identical text from before the mark: %+v; want Absent", f)
	}
	if f := reconcileFrom(t, c, cmd, confirm.Start{At: time.Now().Add(-time.Minute), Mark: before.RowID, Marked: true}); f.Verdict != confirm.Absent {
		t.Fatalf("an identical text below the mark but dated inside the window counts: %+v", f)
	}
	row, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "on my way", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	if f := reconcile(t, c, cmd, start.At); f.Verdict != confirm.Absent {
		t.Fatalf("without the mark (the old wall-clock rule) the row is missed: %+v; this test shows the hole, want Absent", f)
	}
	f := reconcileFrom(t, c, cmd, start)
	if f.Verdict != confirm.Ambiguous || !strings.Contains(f.Seen, row.GUID) || !strings.Contains(f.Seen, "clock was set back") {
		t.Fatalf("a row above the mark dated before the start: %+v; want Ambiguous naming %s and why", f, row.GUID)
	}
	// The clock as it was: the same row is the command's.
	f = reconcileFrom(t, c, cmd, confirm.Start{At: time.Now().Add(-time.Minute), Mark: before.RowID, Marked: true})
	if f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != row.GUID {
		t.Fatalf("the row above the mark, dated after the start: %+v; want Found %s", f, row.GUID)
	}
	if f := reconcileFrom(t, c, cmd, confirm.Start{At: time.Now().Add(-time.Minute), Mark: before.RowID, Marked: true}, row.GUID); f.Verdict != confirm.Absent {
		t.Fatalf("the row above the mark claimed by another command: %+v; want Absent", f)
	}
}

// A chat.db whose newest row is below the recorded mark was replaced or
// restored since the command started: nothing in it can say the command
// is absent.
func TestReconcileChatDBBehindTheMark(t *testing.T) {
	_, c, chat := setup(t)
	cmd := newCommand(chat.GUID, &linev1.SendText{Text: "hello"})
	f := reconcileFrom(t, c, cmd, confirm.Start{At: time.Now(), Mark: 1 << 40, Marked: true})
	if f.Verdict != confirm.Ambiguous || !strings.Contains(f.Seen, "replaced or restored") {
		t.Fatalf("chat.db behind the mark: %+v; want Ambiguous", f)
	}
}

// A tapback is looked for above the mark too, and an edit, which updates
// its row in place, leaves only its date: the command's text dated before
// the start is Ambiguous (an earlier identical edit, or a clock set back),
// never Absent.
func TestReconcileTapbackAndEditUnderAClockSetBack(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	theirs, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: "dinner?"})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "typo", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	old, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true, Tapback: &sim.Tapback{Target: theirs.GUID, Code: 2001}})
	if err != nil {
		t.Fatal(err)
	}
	ahead := time.Now().Add(24 * time.Hour)
	start := confirm.Start{At: ahead, Mark: old.RowID, Marked: true}
	react := newCommand(chat.GUID, &linev1.React{MessageGuid: theirs.GUID, Reaction: &linev1.React_Tapback{Tapback: "like"}})
	if f := reconcileFrom(t, c, react, start); f.Verdict != confirm.Absent {
		t.Fatalf("a like from before the mark: %+v; want Absent", f)
	}
	tb, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true, Tapback: &sim.Tapback{Target: theirs.GUID, Code: 2001}})
	if err != nil {
		t.Fatal(err)
	}
	if f := reconcileFrom(t, c, react, start); f.Verdict != confirm.Ambiguous || !strings.Contains(f.Seen, tb.GUID) {
		t.Fatalf("a like above the mark dated before the start: %+v; want Ambiguous naming %s", f, tb.GUID)
	}
	if f := reconcileFrom(t, c, react, confirm.Start{At: time.Now().Add(-time.Minute), Mark: old.RowID, Marked: true}); f.Verdict != confirm.Found || f.Snapshot.GetMessageGuid() != tb.GUID {
		t.Fatalf("a like above the mark: %+v; want Found %s", f, tb.GUID)
	}
	edit := newCommand(chat.GUID, &linev1.Edit{MessageGuid: mine.GUID, Text: "fixed"})
	if f := reconcileFrom(t, c, edit, start); f.Verdict != confirm.Absent || !strings.Contains(f.Seen, "never edited") {
		t.Fatalf("a message never edited: %+v; want Absent", f)
	}
	if err := st.Edit(ctx, mine.GUID, 0, "fixed"); err != nil {
		t.Fatal(err)
	}
	if f := reconcileFrom(t, c, edit, start); f.Verdict != confirm.Ambiguous {
		t.Fatalf("edited to the command's text, dated before the start: %+v; want Ambiguous", f)
	}
	if err := st.Edit(ctx, mine.GUID, 0, "something else"); err != nil {
		t.Fatal(err)
	}
	if f := reconcileFrom(t, c, edit, start); f.Verdict != confirm.Absent {
		t.Fatalf("edited to other text before the start: %+v; want Absent", f)
	}
}
