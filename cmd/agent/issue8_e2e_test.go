package main

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Holes an adversarial run found (issue 8), each through the relay, the
// agent, the bridge, the simulated helper and the simulated Messages.

// A chat where the other person sent a tapback: mark_read succeeds at once
// instead of waiting for a row Messages never marks read (item 8).
func TestMarkReadAfterTheirTapback(t *testing.T) {
	h := startE2E(t, simSetup{})
	sent := h.ok(cmd(e2ePeer, &linev1.SendText{Text: "dinner at 8?"}))
	// The remote person likes our message (as sim.Remote writes a tapback)
	// and answers.
	if _, err := h.m.Store.Insert(context.Background(), sim.Msg{Chat: e2eChat, Sender: e2ePeer,
		Tapback: &sim.Tapback{Target: sent.GetMessageGuid(), Code: 2001}}); err != nil {
		t.Fatal(err)
	}
	answer := h.incoming("sure")
	start := time.Now()
	c := cmd(e2eChat, &linev1.MarkRead{})
	// Without the fix it waits until this deadline: well beyond "promptly".
	c.Deadline = timestamppb.New(start.Add(10 * time.Second))
	h.submit(c)
	v := h.final(c.Id, 15*time.Second)
	if v.State != "succeeded" {
		t.Fatalf("mark_read: %s %+v", v.State, v.Error)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("mark_read took %v", d)
	}
	if h.col(answer, "is_read") != "1" {
		t.Fatal("their message is not read")
	}
}

// Email handles in different case are one handle and one chat, and a
// chat_guid naming the email in any case finds it (item 10).
func TestEmailHandleCaseEndToEnd(t *testing.T) {
	h := startE2E(t, simSetup{})
	const want = "iMessage;-;alice@example.com"
	for _, c := range []*linev1.Command{
		cmd("Alice@Example.com", &linev1.SendText{Text: "to the upper-case form"}),
		cmd("alice@example.com", &linev1.SendText{Text: "to the lower-case form"}),
		cmd("iMessage;-;ALICE@example.com", &linev1.SendText{Text: "by an upper-case chat guid"}),
	} {
		h.truthful(h.ok(c), want)
	}
	h.ok(cmd("iMessage;-;Alice@Example.COM", &linev1.MarkRead{}))
	var chats, handles int
	if err := h.db.QueryRow(`SELECT (SELECT count(*) FROM chat WHERE lower(guid) LIKE '%alice@example.com'),
		(SELECT count(*) FROM handle WHERE lower(id) = 'alice@example.com')`).Scan(&chats, &handles); err != nil {
		t.Fatal(err)
	}
	if chats != 1 || handles != 1 {
		t.Fatalf("%d chats and %d handles for alice@example.com", chats, handles)
	}
}

// A file name of more than 200 bytes of multibyte characters is sent under
// a shortened name that is still valid UTF-8 and keeps its extension, not
// refused with the helper's "File does not exist" (item 12).
func TestLongMultibyteFileNameEndToEnd(t *testing.T) {
	h := startE2E(t, simSetup{})
	h.ok(cmd(e2ePeer, &linev1.SendText{Text: "photos coming"}))
	for _, name := range []string{strings.Repeat("é", 150) + ".jpg", strings.Repeat("é", 150) + ".jpeg", strings.Repeat("😀", 150) + ".jpeg"} {
		s := h.ok(cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: pngBytes}, FileName: name, MimeType: "image/png"}))
		h.truthful(s, e2eChat)
		var got string
		if err := h.db.QueryRow(`SELECT a.transfer_name FROM attachment a JOIN message_attachment_join j ON j.attachment_id = a.ROWID
			JOIN message m ON m.ROWID = j.message_id WHERE m.guid = ?`, s.GetMessageGuid()).Scan(&got); err != nil {
			t.Fatal(err)
		}
		ext := name[strings.LastIndexByte(name, '.'):]
		if !utf8.ValidString(got) || len(got) > 200 || !strings.HasSuffix(got, ext) || !strings.HasSuffix(name, got) {
			t.Errorf("%.8q...%s: sent as %q (%d bytes)", name, ext, got, len(got))
		}
	}
}
