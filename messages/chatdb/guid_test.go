package chatdb_test

import (
	"errors"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

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
