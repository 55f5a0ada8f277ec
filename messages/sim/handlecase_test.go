package sim

import (
	"context"
	"testing"

	"github.com/line-agent/line-agent/messages/chatdb"
)

// Email handles compare case-insensitively, as Messages compares them:
// "Alice@Example.com" and "alice@example.com" are one handle and one chat,
// iMessage;-;alice@example.com, whichever spelling a chat GUID uses (issue 8
// item 10). Phone numbers are unaffected.
func TestEmailHandlesIgnoreCase(t *testing.T) {
	ctx := context.Background()
	st, ro := newStore(t)
	const want = "iMessage;-;alice@example.com"
	upper, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"Alice@Example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Insert(ctx, Msg{Chat: upper.GUID, FromMe: true, Sent: true, Text: "to the upper-case form"}); err != nil {
		t.Fatal(err)
	}
	lower, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"alice@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Insert(ctx, Msg{Chat: lower.GUID, FromMe: true, Sent: true, Text: "to the lower-case form"}); err != nil {
		t.Fatal(err)
	}
	if upper.GUID != want || lower.RowID != upper.RowID || upper.Identifier != "alice@example.com" {
		t.Fatalf("two chats or the wrong spelling: %+v and %+v", upper, lower)
	}
	// Their reply, and a group, under yet other spellings.
	if _, err := st.Insert(ctx, Msg{Chat: "iMessage;-;ALICE@example.COM", Sender: "ALICE@EXAMPLE.COM", Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	g1, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"Bob@Example.com", "+15551234567"}})
	if err != nil {
		t.Fatal(err)
	}
	g2, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15551234567", "bob@example.COM"}})
	if err != nil || g2.GUID != g1.GUID {
		t.Fatalf("two groups: %s and %s (%v)", g1.GUID, g2.GUID, err)
	}
	var chats, handles, rows int
	if err := ro.QueryRow(`SELECT (SELECT count(*) FROM chat WHERE style = 45), (SELECT count(*) FROM handle WHERE lower(id) = 'alice@example.com'),
		(SELECT count(*) FROM chat_message_join j JOIN chat c ON c.ROWID = j.chat_id WHERE c.guid = ?)`, want).Scan(&chats, &handles, &rows); err != nil {
		t.Fatal(err)
	}
	if chats != 1 || handles != 1 || rows != 3 {
		t.Fatalf("%d one-to-one chats, %d handles for alice, %d rows in %s", chats, handles, rows, want)
	}
	var id, uncanon string
	if err := ro.QueryRow(`SELECT id, uncanonicalized_id FROM handle WHERE lower(id) = 'alice@example.com'`).Scan(&id, &uncanon); err != nil || id != "alice@example.com" {
		t.Fatalf("handle %q (as written %q) %v", id, uncanon, err)
	}

	// A chat GUID naming the email in any case finds the chat, in the
	// Store and through the chat.db reader.
	r, err := chatdb.Open(st.Path(), chatdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, g := range []string{"iMessage;-;Alice@Example.com", "iMessage;-;ALICE@EXAMPLE.COM", want} {
		if c, err := st.Chat(ctx, g); err != nil || c.GUID != want {
			t.Errorf("Store.Chat(%s): %+v %v", g, c, err)
		}
	}
	for _, g := range []string{"iMessage;-;Alice@Example.com", "any;-;ALICE@EXAMPLE.COM", "SMS;-;alice@Example.com", want} {
		if c, err := r.LookupChat(ctx, g); err != nil || c.GUID != want {
			t.Errorf("LookupChat(%s): %+v %v", g, c, err)
		}
		if n, err := r.UnreadIncoming(ctx, g); err != nil || n != 1 {
			t.Errorf("UnreadIncoming(%s): %d %v", g, n, err)
		}
	}
}
