//go:build !chaos

// Package wallclock is the wall clock the agent dates and compares stored
// times with (the journal, quotas, reconciliation, the chat.db reader).
// It is time.Now; it exists so that the fault-injection suite can build
// the agent with a clock that jumps (wallclock_chaos.go, -tags chaos),
// as a Mac's clock does when NTP corrects it or a user changes it.
// Durations and timeouts use the monotonic clock and do not come here.
package wallclock

import "time"

// Now is the current wall-clock time.
func Now() time.Time { return time.Now() }
