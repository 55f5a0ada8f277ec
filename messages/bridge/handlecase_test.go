package bridge_test

import (
	"testing"

	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Email handles compare case-insensitively, as Messages compares them
// (issue 8 item 10): a send to Alice@Example.com and one to
// alice@example.com land in one chat, iMessage;-;alice@example.com, and a
// chat_guid naming the email in any case finds it; through the bridge, the
// simulated helper and chat.db, confirmed by the real Confirmer.
func TestEmailHandleCaseIsOneChat(t *testing.T) {
	e := startBackground(t, sim.UploadPlan{})
	d := e.confirmed()
	const want = "iMessage;-;alice@example.com"
	send := func(text string, target func(*linev1.Command)) *linev1.Snapshot {
		t.Helper()
		cmd := with(onChat(""), func(c *linev1.Command) {
			target(c)
			c.Kind = &linev1.Command_SendText{SendText: &linev1.SendText{Text: text}}
		})
		snap, err := d.Execute(ctx(t), cmd, nil)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		return snap
	}
	to := func(h string) func(*linev1.Command) {
		return func(c *linev1.Command) {
			c.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{h}}}
		}
	}
	in := func(g string) func(*linev1.Command) {
		return func(c *linev1.Command) { c.Target = &linev1.Command_ChatGuid{ChatGuid: g} }
	}
	for _, s := range []*linev1.Snapshot{
		send("to the upper-case form", to("Alice@Example.com")),
		send("to the lower-case form", to("alice@example.com")),
		send("by an upper-case chat guid", in("iMessage;-;ALICE@Example.COM")),
		send("by the any spelling", in("any;-;Alice@Example.com")),
	} {
		if s.GetChatGuid() != want || !s.GetSent() {
			t.Errorf("snapshot %v, want a sent row in %s", s, want)
		}
	}
	var chats, handles, rows int
	if err := e.db.QueryRow(`SELECT (SELECT count(*) FROM chat WHERE lower(guid) LIKE '%alice@example.com'),
		(SELECT count(*) FROM handle WHERE lower(id) = 'alice@example.com'),
		(SELECT count(*) FROM chat_message_join j JOIN chat c ON c.ROWID = j.chat_id WHERE c.guid = ?)`, want).Scan(&chats, &handles, &rows); err != nil {
		t.Fatal(err)
	}
	if chats != 1 || handles != 1 || rows != 4 {
		t.Fatalf("%d chats and %d handles for alice, %d rows in %s", chats, handles, rows, want)
	}
	// Other commands find the chat by an upper-case GUID too.
	mark := with(onChat("iMessage;-;Alice@EXAMPLE.com"), func(c *linev1.Command) { c.Kind = &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}} })
	if _, err := d.Execute(ctx(t), mark, nil); err != nil {
		t.Fatalf("mark_read by an upper-case chat guid: %v", err)
	}
}
