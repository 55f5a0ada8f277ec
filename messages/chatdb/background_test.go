package chatdb_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

func TestChatBackgroundFromProperties(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	r, err := chatdb.Open(e.path, chatdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	bg, err := r.ChatBackground(ctx, e.chat.GUID)
	if err != nil || bg.Set || bg.Complete() {
		t.Fatalf("fresh chat: %+v %v", bg, err)
	}
	if _, err := r.BackgroundRow(ctx, e.chat.GUID, time.Time{}); !errors.Is(err, chatdb.ErrNotFound) {
		t.Fatalf("row on a fresh chat: %v", err)
	}
	if _, err := r.ChatBackground(ctx, "iMessage;-;+19990000000"); !errors.Is(err, chatdb.ErrNotFound) {
		t.Fatalf("unknown chat: %v", err)
	}

	before := e.store.Now().Add(-time.Millisecond)
	key, sig := []byte("KEYBYTES-secret"), []byte("SIGBYTES-secret")
	set, err := e.store.SetBackground(ctx, e.chat.GUID, "", sim.Background{
		AssetID: "ASSET-1", URL: "https://cvws.icloud-content.com/B/locator?k=secret", Key: key, Signature: sig, Size: 4242, Version: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.path + "-wal"); err != nil {
		t.Fatalf("the store should write a WAL: %v", err)
	}
	bg, err = r.ChatBackground(ctx, e.chat.GUID)
	if err != nil {
		t.Fatal(err)
	}
	want := chatdb.Background{Set: true, ChannelGUID: bg.ChannelGUID, AssetID: "ASSET-1", Locator: "https://cvws.icloud-content.com/B/locator?k=secret",
		Size: 4242, Version: 2, HasKey: true, HasSignature: true}
	if bg != want || bg.ChannelGUID == "" || !bg.Complete() {
		t.Fatalf("background %+v", bg)
	}
	if s := bg.String(); strings.Contains(s, "secret") || strings.Contains(s, "KEYBYTES") || !strings.Contains(s, "ASSET-1") {
		t.Errorf("String leaks or lacks: %q", s)
	}
	// Any service spelling finds the chat.
	_, tail, _ := strings.Cut(e.chat.GUID, ";")
	if bg2, err := r.ChatBackground(ctx, "any;"+tail); err != nil || bg2.AssetID != "ASSET-1" {
		t.Errorf("any; spelling: %+v %v", bg2, err)
	}

	row, err := r.BackgroundRow(ctx, e.chat.GUID, before)
	if err != nil || row.GUID != set.GUID || row.Removed || !row.FromMe || row.ChatGUID != e.chat.GUID || row.Date.Before(before) {
		t.Fatalf("set row %+v %v (want %s)", row, err, set.GUID)
	}
	if _, err := r.BackgroundRow(ctx, e.chat.GUID, row.Date.Add(time.Nanosecond)); !errors.Is(err, chatdb.ErrNotFound) {
		t.Errorf("row after its date: %v", err)
	}

	// Missing signature: set but not complete.
	if _, err := e.store.SetBackground(ctx, e.chat.GUID, "", sim.Background{AssetID: "ASSET-2", URL: "https://x", Key: key}); err != nil {
		t.Fatal(err)
	}
	if bg, _ := r.ChatBackground(ctx, e.chat.GUID); !bg.Set || bg.HasSignature || bg.Complete() {
		t.Errorf("unsigned background %+v", bg)
	}

	cleared, err := e.store.ClearBackground(ctx, e.chat.GUID, "")
	if err != nil {
		t.Fatal(err)
	}
	if bg, err := r.ChatBackground(ctx, e.chat.GUID); err != nil || bg.Set {
		t.Errorf("after clear %+v %v", bg, err)
	}
	row, err = r.BackgroundRow(ctx, e.chat.GUID, before)
	if err != nil || row.GUID != cleared.GUID || !row.Removed {
		t.Errorf("latest row %+v %v, want removal %s", row, err, cleared.GUID)
	}
}

func TestBackgroundRowIgnoresOtherChatActions(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	g, err := e.store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15551110001", "+15551110002"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := chatdb.Open(e.path, chatdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := e.store.SetGroupIcon(ctx, g.GUID, "", false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.LeaveGroup(ctx, g.GUID, "+15551110002"); err != nil {
		t.Fatal(err)
	}
	// A background set in another chat is not this chat's.
	if _, err := e.store.SetBackground(ctx, e.chat.GUID, "", sim.Background{AssetID: "A"}); err != nil {
		t.Fatal(err)
	}
	if row, err := r.BackgroundRow(ctx, g.GUID, time.Time{}); !errors.Is(err, chatdb.ErrNotFound) {
		t.Errorf("icon/leave rows taken for a background: %+v %v", row, err)
	}
	if bg, err := r.ChatBackground(ctx, g.GUID); err != nil || bg.Set {
		t.Errorf("group background %+v %v", bg, err)
	}
}
