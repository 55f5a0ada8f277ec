package simhelper

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/line-agent/line-agent/messages/sim"
)

// The simulated helper finds a chat whose email identifier is written in
// another case, creates one chat for both spellings, and compares email
// addresses without case for availability (issue 8 item 10).
func TestSimStoreEmailHandlesIgnoreCase(t *testing.T) {
	ctx := context.Background()
	st, err := sim.Create(filepath.Join(t.TempDir(), "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	store := NewSimStore(st, SimStoreOptions{Unreachable: []string{"Gone@Example.com"}})
	t.Cleanup(store.Close)
	const want = "iMessage;-;alice@example.com"
	a, err := store.CreateChat(ctx, CreateChat{Addresses: []string{"Alice@Example.com"}})
	if err != nil || a.ChatGUID != want {
		t.Fatalf("create-chat Alice@Example.com: %+v %v", a, err)
	}
	b, err := store.CreateChat(ctx, CreateChat{Addresses: []string{"alice@example.com"}, Message: "hi"})
	if err != nil || b.ChatGUID != want {
		t.Fatalf("create-chat alice@example.com: %+v %v", b, err)
	}
	for _, g := range []string{"iMessage;-;ALICE@EXAMPLE.COM", "any;-;Alice@Example.com"} {
		if s, err := store.SendText(ctx, SendText{ChatGUID: g, Text: "again"}); err != nil || s.ChatGUID != want {
			t.Errorf("send-message to %s: %+v %v", g, s, err)
		}
		if err := store.MarkRead(ctx, g); err != nil {
			t.Errorf("mark-chat-read %s: %v", g, err)
		}
	}
	if _, err := store.SendText(ctx, SendText{ChatGUID: "iMessage;-;bob@example.com", Text: "x"}); !errors.Is(err, ErrNoChat) {
		t.Errorf("unknown chat: %v", err)
	}
	for addr, reachable := range map[string]bool{"gone@example.com": false, "GONE@example.com": false, "alice@Example.com": true} {
		if ok, err := store.Available(ctx, addr, "iMessage"); err != nil || ok != reachable {
			t.Errorf("available %s: %v %v, want %v", addr, ok, err, reachable)
		}
	}
}
