package chatdb_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func openReader(t *testing.T, e *env) *chatdb.Reader {
	t.Helper()
	rd, err := chatdb.Open(e.path, chatdb.Options{Home: "/Users/test", Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	t.Cleanup(func() { rd.Close() })
	return rd
}

func codeOf(err error) linev1.ErrorCode {
	var ce *command.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return linev1.ErrorCode_ERROR_CODE_UNSPECIFIED
}

// A read of a row tells what the row's event told: the same event, built by
// the same converter, for a rich message, a tapback and a group action.
func TestReadMessageIsTheRowsEvent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	rd := openReader(t, e)
	first, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "question?", Sent: true})
	must(t, err)
	rich, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "see attached", Subject: "re", Effect: "com.apple.messages.effect.CKConfettiEffect",
		ReplyTo: first.GUID, Attachments: []sim.Attachment{{Name: "cat.jpg", MIME: "image/jpeg", Size: 1234}}})
	must(t, err)
	love, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Tapback: &sim.Tapback{Target: first.GUID, Code: 2000}})
	must(t, err)
	g, err := e.store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15551110001", "+15551110002"}, DisplayName: "Team"})
	must(t, err)
	rename, err := e.store.RenameGroup(ctx, g.GUID, "+15551110001", "Night owls")
	must(t, err)
	keys := []string{key(first.GUID, "message", "0"), key(rich.GUID, "message", "0"), key(love.GUID, "tapback", "0"), key(rename.GUID, "group", "0")}
	m := e.sink.waitKeys(t, wait, keys...)
	for i, guid := range []string{first.GUID, rich.GUID, love.GUID, rename.GUID} {
		got, err := rd.ReadMessage(ctx, guid)
		must(t, err)
		if !proto.Equal(got.GetEvent(), m[keys[i]]) {
			t.Errorf("read of %s:\n %v\nits event:\n %v", guid, got.GetEvent(), m[keys[i]])
		}
	}
	got, _ := rd.ReadMessage(ctx, rich.GUID)
	if a := got.GetEvent().GetMessage().GetAttachments(); len(a) != 1 || a[0].GetFileName() != "cat.jpg" {
		t.Errorf("attachments %v", a)
	}
	if got.GetEvent().GetMessage().GetReplyTo().GetMessageGuid() != first.GUID || got.GetEvent().GetMessage().GetEffect() != "confetti" {
		t.Errorf("reply or effect lost: %v", got.GetEvent().GetMessage())
	}
}

// A read shows the row as it is now: delivered and read marks, an edit's
// new text and date, an unsent part with its body gone.
func TestReadMessageShowsTheCurrentState(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rd := openReader(t, e)
	out, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "draft", Sent: true})
	must(t, err)
	got, err := rd.ReadMessage(ctx, out.GUID)
	must(t, err)
	if !got.GetSent() || got.GetDelivered() || got.GetDateDelivered() != nil || got.GetDateEdited() != nil || got.GetEvent().GetMessage().GetText() != "draft" {
		t.Fatalf("fresh send %v", got)
	}
	must(t, e.store.MarkDelivered(ctx, out.GUID))
	must(t, e.store.MarkRead(ctx, out.GUID))
	must(t, e.store.Edit(ctx, out.GUID, 0, "final"))
	got, err = rd.ReadMessage(ctx, out.GUID)
	must(t, err)
	if !got.GetDelivered() || !got.GetRead() || got.GetDateDelivered() == nil || got.GetDateRead() == nil || got.GetDateEdited() == nil {
		t.Errorf("after delivery, read and edit %v", got)
	}
	if txt := got.GetEvent().GetMessage().GetText(); txt != "final" {
		t.Errorf("edited text %q, want the new text", txt)
	}
	if got.GetEvent().GetKey() != key(out.GUID, "message", "0") || !got.GetEvent().GetMessage().GetFromMe() {
		t.Errorf("event %v", got.GetEvent())
	}
	must(t, e.store.Unsend(ctx, out.GUID, 0))
	got, err = rd.ReadMessage(ctx, out.GUID)
	must(t, err)
	if got.GetDateRetracted() == nil || len(got.GetUnsentParts()) != 1 || got.GetUnsentParts()[0] != 0 || got.GetEvent().GetMessage().GetText() != "" {
		t.Errorf("after unsend %v", got)
	}
}

func TestReadMessageUnknownOrEmpty(t *testing.T) {
	e := newEnv(t)
	rd := openReader(t, e)
	_, err := rd.ReadMessage(context.Background(), "NO-SUCH-GUID")
	if codeOf(err) != linev1.ErrorCode_ERROR_CODE_NOT_FOUND || strings.HasPrefix(command.AsError(err).Msg, "no chat ") {
		t.Errorf("unknown guid: %v (want NOT_FOUND, not worded as a missing chat)", err)
	}
	if _, err := rd.ReadMessage(context.Background(), ""); codeOf(err) != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Errorf("empty guid: %v", err)
	}
}

// A chat reads with its members and name, under any service spelling; an
// unknown one is NOT_FOUND worded as a missing chat.
func TestReadChat(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rd := openReader(t, e)
	g, err := e.store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15551110001", "+15551110002"}, DisplayName: "Team"})
	must(t, err)
	got, err := rd.ReadChat(ctx, command.PlatformChatGUID(g.GUID))
	must(t, err)
	if got.GetChatGuid() != g.GUID || !got.GetGroup() || got.GetDisplayName() != "Team" || got.GetService() != "iMessage" || len(got.GetParticipants()) != 2 {
		t.Fatalf("group %v", got)
	}
	hs := []string{got.GetParticipants()[0].GetHandle(), got.GetParticipants()[1].GetHandle()}
	if !strings.Contains(strings.Join(hs, ","), "+15551110001") || !strings.Contains(strings.Join(hs, ","), "+15551110002") || got.GetParticipants()[0].GetService() != "iMessage" {
		t.Errorf("members %v", got.GetParticipants())
	}
	dm, err := rd.ReadChat(ctx, "any;-;+15551234567")
	must(t, err)
	if dm.GetChatGuid() != e.chat.GUID || dm.GetGroup() || dm.GetDisplayName() != "" || len(dm.GetParticipants()) != 1 ||
		dm.GetParticipants()[0].GetHandle() != "+15551234567" || dm.GetChatIdentifier() != "+15551234567" {
		t.Errorf("dm %v", dm)
	}
	_, err = rd.ReadChat(ctx, "any;-;+15550009999")
	if codeOf(err) != linev1.ErrorCode_ERROR_CODE_NOT_FOUND || !strings.HasPrefix(command.AsError(err).Msg, "no chat ") {
		t.Errorf("unknown chat: %v", err)
	}
}
