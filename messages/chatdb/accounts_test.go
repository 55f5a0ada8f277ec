package chatdb_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

func TestAccountAddresses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithLine("+15550000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chat, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	r, err := chatdb.Open(path, chatdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.AccountAddresses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, "+15550000001") || slices.Contains(got, "+15557654321") {
		t.Fatalf("addresses %v: want the account's line and not the other person's", got)
	}
}
