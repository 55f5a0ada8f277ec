package chatdb_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

const wait = 10 * time.Second

func TestStartFromNowSkipsExistingRows(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	old, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "before startup"})
	e.start(t, nil, nil)
	r, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "after startup"})
	m := e.sink.waitKeys(t, wait, key(r.GUID, "message", "0"))
	if m[key(old.GUID, "message", "0")] != nil {
		t.Error("a row that existed before startup was reported")
	}
}

func TestOutgoingLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)

	r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "hello there", Effect: "slam"})
	if err != nil {
		t.Fatal(err)
	}
	m := e.sink.waitKeys(t, wait, key(r.GUID, "message", "0"))
	ev := m[key(r.GUID, "message", "0")]
	msg := ev.GetMessage()
	if msg.GetText() != "hello there" || !msg.GetFromMe() || msg.GetEffect() != "slam" || msg.GetService() != "iMessage" {
		t.Errorf("message payload %v", msg)
	}
	if ev.GetChatGuid() != e.chat.GUID || ev.GetLine() != sim.DefaultLineNumber || ev.GetRowId() != r.RowID || ev.GetMessageGuid() != r.GUID || ev.GetHistorical() {
		t.Errorf("event envelope %v", ev)
	}

	must(t, e.store.MarkSent(ctx, r.GUID))
	e.sink.waitKeys(t, wait, key(r.GUID, "sent", "0"))
	must(t, e.store.MarkDelivered(ctx, r.GUID))
	e.sink.waitKeys(t, wait, key(r.GUID, "delivered", "0"))
	must(t, e.store.MarkRead(ctx, r.GUID))
	m = e.sink.waitKeys(t, wait, key(r.GUID, "read", "0"))
	if !m[key(r.GUID, "read", "0")].GetRead().GetFromMe() {
		t.Error("read receipt on my message should say from_me")
	}

	must(t, e.store.Edit(ctx, r.GUID, 0, "hello, there"))
	st, err := readerState(t, e.path, r.GUID)
	if err != nil {
		t.Fatal(err)
	}
	editKey := key(r.GUID, "edited", strconv.FormatInt(chatdb.ToAppleTime(st.DateEdited), 10))
	m = e.sink.waitKeys(t, wait, editKey)
	ed := m[editKey].GetEdited()
	if ed.GetText() != "hello, there" || len(ed.GetHistory()) != 2 || ed.GetHistory()[0].GetText() != "hello there" {
		t.Errorf("edited payload %v", ed)
	}

	must(t, e.store.Unsend(ctx, r.GUID, 0))
	e.sink.waitKeys(t, wait, key(r.GUID, "unsent", "0"))

	f, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "will fail"})
	must(t, e.store.SetError(ctx, f.GUID, 22))
	m = e.sink.waitKeys(t, wait, key(f.GUID, "message", "0"), key(f.GUID, "failed", "22"))
	if m[key(f.GUID, "failed", "22")].GetSendFailed().GetError() != 22 {
		t.Error("send_failed payload")
	}
	if m[key(f.GUID, "sent", "0")] != nil {
		t.Error("a failed send was reported sent")
	}

	// Nothing is reported twice, and an unsend is not mistaken for an edit.
	time.Sleep(50 * time.Millisecond)
	evs, _ := e.sink.snapshot()
	noDuplicates(t, evs)
	edits := 0
	for _, ev := range evs {
		if ev.GetEdited() != nil {
			edits++
		}
	}
	if edits != 1 {
		t.Errorf("%d edited events, want 1", edits)
	}
}

func TestIncomingRichMessage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	first, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "question?", Sent: true})
	r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "see attached", Subject: "re", Effect: "com.apple.messages.effect.CKConfettiEffect",
		ReplyTo: first.GUID, Attachments: []sim.Attachment{{Name: "cat.jpg", MIME: "image/jpeg", Size: 1234}}})
	if err != nil {
		t.Fatal(err)
	}
	m := e.sink.waitKeys(t, wait, key(r.GUID, "message", "0"))
	msg := m[key(r.GUID, "message", "0")].GetMessage()
	if msg.GetFromMe() || msg.GetSender() != "+15551234567" || msg.GetSubject() != "re" || msg.GetEffect() != "confetti" {
		t.Errorf("payload %v", msg)
	}
	if msg.GetText() != "\uFFFCsee attached" {
		t.Errorf("text %q", msg.GetText())
	}
	if msg.GetReplyTo().GetMessageGuid() != first.GUID || msg.GetReplyTo().GetPart() != 0 {
		t.Errorf("reply_to %v", msg.GetReplyTo())
	}
	if len(msg.GetAttachments()) != 1 {
		t.Fatalf("attachments %v", msg.GetAttachments())
	}
	a := msg.GetAttachments()[0]
	if a.GetMimeType() != "image/jpeg" || a.GetSize() != 1234 || a.GetTransferState() != 5 || !contains(a.GetPath(), "/Users/test/Library/Messages/Attachments/") || a.GetFileName() != "cat.jpg" {
		t.Errorf("attachment %v", a)
	}
	if len(msg.GetRuns()) != 2 || msg.GetRuns()[0].GetAttachmentGuid() != a.GetGuid() || msg.GetRuns()[1].GetPart() != 1 {
		t.Errorf("runs %v", msg.GetRuns())
	}
	// Received rows are delivered by nature: no delivered event for them.
	if m[key(r.GUID, "delivered", "0")] != nil {
		t.Error("delivered event for a received message")
	}
	must(t, func() error { _, err := e.store.MarkChatRead(ctx, e.chat.GUID); return err }())
	m = e.sink.waitKeys(t, wait, key(r.GUID, "read", "0"))
	if m[key(r.GUID, "read", "0")].GetRead().GetFromMe() {
		t.Error("reading a received message is not from_me")
	}
}

func TestTapbacksReplacedAndRemoved(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	target, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "party?", Sent: true})
	love, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Tapback: &sim.Tapback{Target: target.GUID, Code: 2000}})
	m := e.sink.waitKeys(t, wait, key(love.GUID, "tapback", "0"))
	tb := m[key(love.GUID, "tapback", "0")].GetTapback()
	if tb.GetTapback() != "love" || tb.GetTargetMessageGuid() != target.GUID || tb.GetRemoved() || tb.GetSender() != "+15551234567" {
		t.Errorf("tapback %v", tb)
	}
	// Changing to an emoji deletes the love row and writes a new one.
	emoji, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Tapback: &sim.Tapback{Target: target.GUID, Code: 2006, Emoji: "🎉"}})
	m = e.sink.waitKeys(t, wait, key(emoji.GUID, "tapback", "0"))
	if tb := m[key(emoji.GUID, "tapback", "0")].GetTapback(); tb.GetTapback() != "emoji" || tb.GetEmoji() != "🎉" {
		t.Errorf("emoji tapback %v", tb)
	}
	removal, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Tapback: &sim.Tapback{Target: target.GUID, Code: 3006, Emoji: "🎉"}})
	m = e.sink.waitKeys(t, wait, key(removal.GUID, "tapback", "0"))
	if tb := m[key(removal.GUID, "tapback", "0")].GetTapback(); !tb.GetRemoved() || tb.GetTapback() != "emoji" {
		t.Errorf("removal %v", tb)
	}
	evs, _ := e.sink.snapshot()
	noDuplicates(t, evs)
	n := 0
	for _, ev := range evs {
		if ev.GetTapback() != nil {
			n++
		}
		if ev.GetMessage() != nil && ev.GetMessageGuid() != target.GUID {
			t.Errorf("tapback row reported as a message: %v", ev)
		}
	}
	if n != 3 {
		t.Errorf("%d tapback events, want 3", n)
	}
}

func TestGroupEvents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	g, err := e.store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15551110001", "+15551110002"}, DisplayName: "Team"})
	if err != nil {
		t.Fatal(err)
	}
	var rows []sim.Row
	add := func(r sim.Row, err error) {
		t.Helper()
		must(t, err)
		rows = append(rows, r)
	}
	add(e.store.AddParticipant(ctx, g.GUID, "", "+15551110003"))
	add(e.store.RemoveParticipant(ctx, g.GUID, "+15551110001", "+15551110002"))
	add(e.store.LeaveGroup(ctx, g.GUID, "+15551110003"))
	add(e.store.RenameGroup(ctx, g.GUID, "+15551110001", "Night owls"))
	add(e.store.SetGroupIcon(ctx, g.GUID, "", false))
	add(e.store.SetGroupIcon(ctx, g.GUID, "", true))
	add(e.store.SetBackground(ctx, g.GUID, "", sim.Background{AssetID: "ASSET1", URL: "https://example.invalid/a", Size: 10, Version: 1}))
	add(e.store.ClearBackground(ctx, g.GUID, "+15551110001"))
	want := []struct {
		action       linev1.GroupAction
		handle, name string
		actor        string
	}{
		{linev1.GroupAction_GROUP_ACTION_PARTICIPANT_ADDED, "+15551110003", "", sim.DefaultLineNumber},
		{linev1.GroupAction_GROUP_ACTION_PARTICIPANT_REMOVED, "+15551110002", "", "+15551110001"},
		{linev1.GroupAction_GROUP_ACTION_PARTICIPANT_LEFT, "+15551110003", "", "+15551110003"},
		{linev1.GroupAction_GROUP_ACTION_RENAMED, "", "Night owls", "+15551110001"},
		{linev1.GroupAction_GROUP_ACTION_ICON_SET, "", "", sim.DefaultLineNumber},
		{linev1.GroupAction_GROUP_ACTION_ICON_REMOVED, "", "", sim.DefaultLineNumber},
		{linev1.GroupAction_GROUP_ACTION_BACKGROUND_SET, "", "", sim.DefaultLineNumber},
		{linev1.GroupAction_GROUP_ACTION_BACKGROUND_REMOVED, "", "", "+15551110001"},
	}
	var keys []string
	for _, r := range rows {
		keys = append(keys, key(r.GUID, "group", "0"))
	}
	m := e.sink.waitKeys(t, wait, keys...)
	for i, w := range want {
		ev := m[keys[i]]
		g := ev.GetGroup()
		if g.GetAction() != w.action || g.GetHandle() != w.handle || g.GetName() != w.name || g.GetActor() != w.actor {
			t.Errorf("row %d: %v, want %+v", i, g, w)
		}
		if ev.GetChatGuid() == "" {
			t.Errorf("row %d: no chat guid", i)
		}
	}
}

func TestSinkFailureRetriesWithoutLossOrDuplicates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	e.sink.mu.Lock()
	e.sink.fail = 3
	e.sink.mu.Unlock()
	var keys []string
	for i := 0; i < 5; i++ {
		r, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: fmt.Sprint("m", i)})
		keys = append(keys, key(r.GUID, "message", "0"))
	}
	e.sink.waitKeys(t, wait, keys...)
	evs, _ := e.sink.snapshot()
	noDuplicates(t, evs)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readerState(t *testing.T, path, guid string) (chatdb.MessageState, error) {
	t.Helper()
	r, err := chatdb.Open(path, chatdb.Options{})
	if err != nil {
		return chatdb.MessageState{}, err
	}
	defer r.Close()
	return r.LookupMessage(context.Background(), guid)
}
