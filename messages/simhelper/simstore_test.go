package simhelper

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// newChatDB is a simulated Messages' chat.db: the Store writing it and a
// chatdb Reader of it.
func newChatDB(t *testing.T) (*sim.Store, *chatdb.Reader) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rd, err := chatdb.Open(path, chatdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return st, rd
}

// A send through the SimStore is answered by sim.Store.Send's servers: sent,
// delivered, then handed to OnSent; tapbacks carry Apple's codes; Close
// stops the sends still waiting for the servers.
func TestSimStoreSendsReactsAndStops(t *testing.T) {
	ctx := context.Background()
	st, rd := newChatDB(t)
	delivered := make(chan sim.Delivery, 4)
	store := NewSimStore(st, SimStoreOptions{Reader: rd, OnSent: func(d sim.Delivery) { delivered <- d }})
	t.Cleanup(store.Close)
	if _, err := st.EnsureChat(ctx, sim.ChatSpec{GUID: "any;-;+15551230002"}); err != nil {
		t.Fatal(err)
	}

	sent, err := store.SendText(ctx, SendText{ChatGUID: "iMessage;-;+15551230002", Text: "hello"})
	if err != nil || sent.ChatGUID != "any;-;+15551230002" {
		t.Fatalf("send-message: %+v %v", sent, err)
	}
	select {
	case d := <-delivered:
		if d.MessageGUID != sent.MessageGUID || d.Text != "hello" {
			t.Fatalf("delivery %+v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never handed to the people in the chat")
	}
	if m, err := rd.LookupMessage(ctx, sent.MessageGUID); err != nil || !m.Sent || !m.Delivered {
		t.Fatalf("handed over before delivered: %+v %v", m, err)
	}

	for _, c := range []struct {
		r     Reaction
		code  int
		emoji string
	}{
		{Reaction{Type: "love"}, 2000, ""},
		{Reaction{Type: "-question"}, 3005, ""},
		{Reaction{Type: "emoji", Emoji: "🎉"}, 2006, "🎉"},
		{Reaction{Type: "-emoji", Emoji: "🎉"}, 3006, "🎉"},
		{Reaction{Code: 2001, Emoji: "🎉"}, 2001, ""},
	} {
		c.r.ChatGUID, c.r.TargetGUID = sent.ChatGUID, sent.MessageGUID
		tb, err := store.React(ctx, c.r)
		if err != nil {
			t.Fatalf("%+v: %v", c.r, err)
		}
		// The row's body is Messages' summary ("Reacted 🎉 to ..."),
		// which names an emoji only when the row carries one.
		if m, err := rd.LookupMessage(ctx, tb.MessageGUID); err != nil || m.Tapback != c.code || strings.Contains(m.Text, "🎉") != (c.emoji != "") {
			t.Errorf("%+v: %+v %v, want code %d emoji %q", c.r, m, err, c.code, c.emoji)
		}
	}
	if _, err := store.React(ctx, Reaction{ChatGUID: sent.ChatGUID, TargetGUID: sent.MessageGUID, Type: "shrug"}); err == nil {
		t.Error("a reaction Apple does not have was written")
	}
	if _, err := store.React(ctx, Reaction{ChatGUID: sent.ChatGUID, TargetGUID: "MISSING", Type: "love"}); !errors.Is(err, ErrNoMessage) {
		t.Errorf("tapback on a missing message: %v", err)
	}

	slow := NewSimStore(st, SimStoreOptions{Latency: time.Hour, OnSent: func(d sim.Delivery) { t.Errorf("delivered after Close: %+v", d) }})
	pending, err := slow.SendText(ctx, SendText{ChatGUID: sent.ChatGUID, Text: "never sent"})
	if err != nil {
		t.Fatal(err)
	}
	slow.Close()
	if m, err := rd.LookupMessage(ctx, pending.MessageGUID); err != nil || m.Sent {
		t.Errorf("after Close: %+v %v", m, err)
	}
	if _, err := slow.SendText(ctx, SendText{ChatGUID: sent.ChatGUID, Text: "late"}); err == nil {
		t.Error("a closed SimStore sends")
	}
}
