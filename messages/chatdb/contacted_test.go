package chatdb_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// Contacted answers the new-conversation quota's question from chat.db as
// Messages wrote it: a sent message in a chat with the handle (one-to-one
// or group) or a message the handle wrote, on this line only; a failed
// send and a conversation on another line of the same Mac do not count.
func TestContactedJudgesFromChatDB(t *testing.T) {
	ctx := context.Background()
	const line, other = "+15550000001", "+15550000002"
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithLine(line))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	insert := func(spec sim.ChatSpec, m sim.Msg) {
		t.Helper()
		c, err := st.EnsureChat(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		m.Chat = c.GUID
		if _, err := st.Insert(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	insert(sim.ChatSpec{Participants: []string{"+15557650001"}}, sim.Msg{FromMe: true, Text: "hi", Sent: true})
	insert(sim.ChatSpec{Participants: []string{"+15557650002", "Group.Member@Example.com"}}, sim.Msg{FromMe: true, Text: "hi all", Sent: true})
	insert(sim.ChatSpec{Participants: []string{"+15557650003"}}, sim.Msg{Text: "they wrote first"})
	insert(sim.ChatSpec{Participants: []string{"+15557650004"}}, sim.Msg{FromMe: true, Text: "never left", Error: 22})
	insert(sim.ChatSpec{Participants: []string{"+15557650005"}, Line: other}, sim.Msg{FromMe: true, Text: "from the other line", Sent: true})

	rd, err := chatdb.Open(path, chatdb.Options{Line: line, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	for _, c := range []struct {
		line, handle string
		want         bool
	}{
		{line, "+15557650001", true},
		{line, "(555) 765-0001", true}, // any spelling of the handle
		{line, "+15557650002", true},
		{line, "group.member@example.com", true},
		{line, "+15557650003", true},
		{line, "+15557650004", false},
		{line, "+15557650005", false},
		{other, "+15557650005", true},
		{other, "+15557650001", false},
		{line, "+15557659999", false},
	} {
		got, err := rd.Contacted(ctx, c.line, c.handle)
		if err != nil || got != c.want {
			t.Errorf("Contacted(%s, %s) = %v, %v; want %v", c.line, c.handle, got, err, c.want)
		}
	}
}
