package confirm_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

const peer = "+15557654321"

// setup is a real WAL chat.db written by sim.Store and a Confirmer over a
// separate read-only Reader of it.
func setup(t *testing.T) (*sim.Store, *confirm.Confirmer, sim.Chat) {
	t.Helper()
	st, err := sim.Create(filepath.Join(t.TempDir(), "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	chat, err := st.EnsureChat(context.Background(), sim.ChatSpec{Participants: []string{peer}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := chatdb.Open(st.Path(), chatdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return st, confirm.New(r, confirm.Options{MaxPoll: 5 * time.Millisecond}), chat
}

func code(err error) linev1.ErrorCode {
	var e *command.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return linev1.ErrorCode_ERROR_CODE_UNSPECIFIED
}

func newCommand(chat string, kind any) *linev1.Command {
	c := &linev1.Command{Id: "x", Target: &linev1.Command_ChatGuid{ChatGuid: chat}}
	switch k := kind.(type) {
	case *linev1.SendText:
		c.Kind = &linev1.Command_SendText{SendText: k}
	case *linev1.React:
		c.Kind = &linev1.Command_React{React: k}
	case *linev1.Edit:
		c.Kind = &linev1.Command_Edit{Edit: k}
	case *linev1.Unsend:
		c.Kind = &linev1.Command_Unsend{Unsend: k}
	case *linev1.MarkRead:
		c.Kind = &linev1.Command_MarkRead{MarkRead: k}
	case *linev1.RenameGroup:
		c.Kind = &linev1.Command_RenameGroup{RenameGroup: k}
	case *linev1.CreateChat:
		c.Target = nil
		c.Kind = &linev1.Command_CreateChat{CreateChat: k}
	}
	return c
}

func noReport(*linev1.CommandUpdate) {}

func TestSendConfirmedOnlyOnceSent(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	row, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(50 * time.Millisecond); _ = st.MarkSent(ctx, row.GUID) }()
	start := time.Now()
	snap, err := c.Confirm(ctx, newCommand(chat.GUID, &linev1.SendText{Text: "hi"}), confirm.Before{}, &linev1.Snapshot{MessageGuid: row.GUID}, noReport)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 40*time.Millisecond || !snap.GetSent() || snap.GetMessageGuid() != row.GUID || snap.GetChatGuid() != chat.GUID || snap.GetDate() == nil {
		t.Fatalf("confirmed early or wrong: %v after %v", snap, time.Since(start))
	}

	// Without a GUID the row is found by text (AppleScript's case).
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	before, err := c.Check(tctx, newCommand(chat.GUID, &linev1.SendText{Text: "by text"}))
	if err != nil {
		t.Fatal(err)
	}
	row2, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "by text", Sent: true})
	snap, err = c.Confirm(tctx, newCommand(chat.GUID, &linev1.SendText{Text: "by text"}), before, &linev1.Snapshot{}, noReport)
	if err != nil || snap.GetMessageGuid() != row2.GUID {
		t.Fatalf("by text: %v %v", snap, err)
	}
}

func TestSendFailureAndDeadline(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	bad, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "x"})
	_ = st.SetError(ctx, bad.GUID, 22)
	_, err := c.Confirm(ctx, newCommand(chat.GUID, &linev1.SendText{Text: "x"}), confirm.Before{}, &linev1.Snapshot{MessageGuid: bad.GUID}, noReport)
	if code(err) != linev1.ErrorCode_ERROR_CODE_UNAVAILABLE {
		t.Fatalf("error row: %v", err)
	}
	stuck, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "y"})
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = c.Confirm(dctx, newCommand(chat.GUID, &linev1.SendText{Text: "y"}), confirm.Before{}, &linev1.Snapshot{MessageGuid: stuck.GUID}, noReport)
	var e *command.Error
	if !errors.As(err, &e) || e.Code != linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED || e.LastState != "written, not sent" {
		t.Fatalf("deadline: %#v", err)
	}
}

func TestChecksRefuseBeforeSending(t *testing.T) {
	st, c, chat := setup(t)
	ctx := context.Background()
	theirs, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: "theirs"})
	old, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true, Text: "old", Date: time.Now().Add(-3 * time.Minute)})
	mine, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true, Text: "mine"})
	for name, tc := range map[string]struct {
		c    *linev1.Command
		want linev1.ErrorCode
	}{
		"unknown chat":      {newCommand("iMessage;-;+15550009999", &linev1.SendText{Text: "x"}), linev1.ErrorCode_ERROR_CODE_NOT_FOUND},
		"tapback missing":   {newCommand(chat.GUID, &linev1.React{MessageGuid: "NOPE"}), linev1.ErrorCode_ERROR_CODE_NOT_FOUND},
		"reply missing":     {newCommand(chat.GUID, &linev1.SendText{Text: "x", ReplyTo: &linev1.ReplyTo{MessageGuid: "NOPE"}}), linev1.ErrorCode_ERROR_CODE_NOT_FOUND},
		"edit theirs":       {newCommand(chat.GUID, &linev1.Edit{MessageGuid: theirs.GUID, Text: "x"}), linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		"unsend theirs":     {newCommand(chat.GUID, &linev1.Unsend{MessageGuid: theirs.GUID}), linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		"edit too late":     {newCommand(chat.GUID, &linev1.Edit{MessageGuid: old.GUID, Text: "x"}), linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		"unsend too late":   {newCommand(chat.GUID, &linev1.Unsend{MessageGuid: old.GUID}), linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		"edit mine in time": {newCommand(chat.GUID, &linev1.Edit{MessageGuid: mine.GUID, Text: "x"}), linev1.ErrorCode_ERROR_CODE_UNSPECIFIED},
		"tapback on theirs": {newCommand(chat.GUID, &linev1.React{MessageGuid: theirs.GUID}), linev1.ErrorCode_ERROR_CODE_UNSPECIFIED},
	} {
		if _, err := c.Check(ctx, tc.c); code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
}

func TestEditUnsendTapbackReadRename(t *testing.T) {
	st, c, chat := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mine, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true, Text: "draft"})
	theirs, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: "hello"})

	edit := newCommand(chat.GUID, &linev1.Edit{MessageGuid: mine.GUID, Text: "final"})
	before, err := c.Check(ctx, edit)
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); _ = st.Edit(ctx, mine.GUID, 0, "final") }()
	if _, err := c.Confirm(ctx, edit, before, &linev1.Snapshot{}, noReport); err != nil {
		t.Fatal("edit:", err)
	}

	go func() { time.Sleep(20 * time.Millisecond); _ = st.Unsend(ctx, mine.GUID, 0) }()
	if _, err := c.Confirm(ctx, newCommand(chat.GUID, &linev1.Unsend{MessageGuid: mine.GUID}), confirm.Before{}, &linev1.Snapshot{}, noReport); err != nil {
		t.Fatal("unsend:", err)
	}

	react := newCommand(chat.GUID, &linev1.React{MessageGuid: theirs.GUID, Reaction: &linev1.React_Tapback{Tapback: "laugh"}})
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Tapback: &sim.Tapback{Target: theirs.GUID, Code: 2003}})
	}()
	snap, err := c.Confirm(ctx, react, confirm.Before{}, &linev1.Snapshot{}, noReport)
	if err != nil || snap.GetMessageGuid() == "" {
		t.Fatal("react:", snap, err)
	}

	go func() { time.Sleep(20 * time.Millisecond); _, _ = st.MarkChatRead(ctx, chat.GUID) }()
	if _, err := c.Confirm(ctx, newCommand(chat.GUID, &linev1.MarkRead{}), confirm.Before{}, &linev1.Snapshot{}, noReport); err != nil {
		t.Fatal("mark read:", err)
	}

	grp, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{peer, "+15557650000"}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); _, _ = st.RenameGroup(ctx, grp.GUID, "", "Team") }()
	snap, err = c.Confirm(ctx, newCommand(grp.GUID, &linev1.RenameGroup{Name: "Team"}), confirm.Before{}, &linev1.Snapshot{}, noReport)
	if err != nil || snap.GetChatGuid() != grp.GUID {
		t.Fatal("rename:", snap, err)
	}
}

// A chat created without a first message (create-chat-empty) is confirmed
// by its chat row, or a group's by its name, with no message GUID expected.
func TestCreateChatWithoutFirstMessage(t *testing.T) {
	st, c, _ := setup(t)
	ctx := context.Background()
	const guid = "iMessage;-;+15557650100"
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557650100"}})
	}()
	start := time.Now()
	snap, err := c.Confirm(ctx, newCommand("", &linev1.CreateChat{Participants: []string{"+15557650100"}}), confirm.Before{}, &linev1.Snapshot{ChatGuid: guid}, noReport)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 40*time.Millisecond || snap.GetChatGuid() != guid || snap.GetMessageGuid() != "" || snap.GetSent() {
		t.Fatalf("confirmed early or wrong: %v after %v", snap, time.Since(start))
	}

	// A chat that never appears is not confirmed.
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = c.Confirm(dctx, newCommand("", &linev1.CreateChat{Participants: []string{"+15557650101"}}), confirm.Before{}, &linev1.Snapshot{ChatGuid: "iMessage;-;+15557650101"}, noReport)
	var e *command.Error
	if !errors.As(err, &e) || e.Code != linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED || e.LastState != "chat not visible" {
		t.Fatalf("missing chat: %#v", err)
	}

	// A named group: its name is the evidence.
	grp, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557650102", "g@example.com"}, Group: true})
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(30 * time.Millisecond); _, _ = st.RenameGroup(ctx, grp.GUID, "", "Crew") }()
	snap, err = c.Confirm(ctx, newCommand("", &linev1.CreateChat{Participants: []string{"+15557650102", "g@example.com"}, Name: "Crew"}), confirm.Before{}, &linev1.Snapshot{ChatGuid: grp.GUID}, noReport)
	if err != nil || snap.GetChatGuid() != grp.GUID || snap.GetMessageGuid() != "" {
		t.Fatalf("group: %v %v", snap, err)
	}

	// No chat named: INTERNAL, not a guess.
	if _, err := c.Confirm(ctx, newCommand("", &linev1.CreateChat{Participants: []string{"+15557650103"}}), confirm.Before{}, &linev1.Snapshot{}, noReport); code(err) != linev1.ErrorCode_ERROR_CODE_INTERNAL {
		t.Fatalf("unnamed: %v", err)
	}
}

// A tapback from the other person is a row Messages does not mark read
// with the chat (neither does the simulated Messages): mark_read must not
// wait for it (issue 8 item 8).
func TestMarkReadIgnoresTheirTapbacks(t *testing.T) {
	st, c, chat := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	mine, _ := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true, Text: "how about friday?"})
	if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Sender: peer, Tapback: &sim.Tapback{Target: mine.GUID, Code: 2001}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Sender: peer, Text: "works for me"}); err != nil {
		t.Fatal(err)
	}
	// Their message is unread until the chat is read.
	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer dcancel()
	_, err := c.Confirm(dctx, newCommand(chat.GUID, &linev1.MarkRead{}), confirm.Before{}, &linev1.Snapshot{}, noReport)
	var e *command.Error
	if !errors.As(err, &e) || e.Code != linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED || e.LastState != "1 incoming messages unread" {
		t.Fatalf("before the chat was read: %#v", err)
	}
	if _, err := st.MarkChatRead(ctx, chat.GUID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Confirm(ctx, newCommand(chat.GUID, &linev1.MarkRead{}), confirm.Before{}, &linev1.Snapshot{}, noReport); err != nil {
		t.Fatalf("mark read with their tapback in the chat: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("mark read took %v", d)
	}
}
