package chatdb_test

import (
	"errors"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func TestNormalizeChatGUID(t *testing.T) {
	same := [][]string{
		{"iMessage;-;+15551234567", "SMS;-;+15551234567", "any;-;+15551234567", "RCS;-;+15551234567"},
		{"iMessage;+;chat123", "any;+;chat123"},
		{"iMessage;-;Bob@Example.com", "any;-;bob@example.com"},
	}
	for _, group := range same {
		for _, g := range group[1:] {
			if !chatdb.SameChat(group[0], g) {
				t.Errorf("%s and %s should be the same chat", group[0], g)
			}
		}
	}
	if chatdb.SameChat("iMessage;-;+15551234567", "iMessage;+;+15551234567") {
		t.Error("one-to-one and group must differ")
	}
	if got := chatdb.NormalizeChatGUID("not a guid"); got != "not a guid" {
		t.Errorf("got %q", got)
	}
}

func TestAppleTime(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	if got := chatdb.FromAppleTime(chatdb.ToAppleTime(now)); !got.Equal(now) {
		t.Errorf("round trip %v", got)
	}
	// Seconds, as macOS before 10.13 wrote them.
	if got := chatdb.FromAppleTime(600000000); !got.Equal(chatdb.AppleEpoch.Add(600000000 * time.Second)) {
		t.Errorf("seconds %v", got)
	}
	if !chatdb.FromAppleTime(0).IsZero() || chatdb.ToAppleTime(time.Time{}) != 0 {
		t.Error("zero")
	}
}

func TestCanonicalHandle(t *testing.T) {
	for in, want := range map[string]string{
		"Alice@Example.COM": "alice@example.com",
		"alice@example.com": "alice@example.com",
		"+15551234567":      "+15551234567",
	} {
		if got := chatdb.CanonicalHandle(in); got != want {
			t.Errorf("CanonicalHandle(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"iMessage;-;Alice@Example.COM": "iMessage;-;alice@example.com",
		"any;-;+15551234567":           "any;-;+15551234567",
		"iMessage;+;chat123":           "iMessage;+;chat123",
		"not a guid":                   "not a guid",
	} {
		if got := chatdb.CanonicalChatGUID(in); got != want {
			t.Errorf("CanonicalChatGUID(%q) = %q, want %q", in, got, want)
		}
	}
}
