package chatdb

import "time"

// AppleEpoch is 2001-01-01T00:00:00Z, the zero of every chat.db timestamp.
// Exported so that writers of chat.db files (the simulated Messages) and this
// reader can never disagree about it.
var AppleEpoch = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

// secondsThreshold separates the two encodings Messages has used: a value
// below it is seconds since 2001 (macOS before 10.13), above it nanoseconds.
// 1e11 seconds is the year 5170; 1e11 nanoseconds is 100 s after the epoch.
const secondsThreshold = 100_000_000_000

// ToAppleTime converts t to chat.db's encoding: nanoseconds since 2001-01-01
// UTC, as macOS 10.13 and later write message.date and its siblings. The zero
// time maps to 0, which chat.db uses for "never".
func ToAppleTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Sub(AppleEpoch).Nanoseconds()
}

// FromAppleTime converts a chat.db timestamp to a time.Time in UTC. It accepts
// both encodings (seconds before macOS 10.13, nanoseconds after) because an
// upgraded Mac keeps old rows, and returns the zero time for 0 ("never").
func FromAppleTime(v int64) time.Time {
	switch {
	case v == 0:
		return time.Time{}
	case v > -secondsThreshold && v < secondsThreshold:
		return AppleEpoch.Add(time.Duration(v) * time.Second)
	default:
		return AppleEpoch.Add(time.Duration(v))
	}
}
