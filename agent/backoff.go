package agent

import (
	"math/rand/v2"
	"time"
)

// Backoff is full-jitter exponential backoff: each wait is uniform in
// [0, min(Cap, Base*2^attempt)). Jitter spread over the whole interval keeps a
// fleet of agents that lost the relay at the same moment from coming back in
// lockstep. Reset only after a Welcome: a relay that accepts the TCP
// connection and then fails must not earn a fast retry.
type Backoff struct {
	Base, Cap time.Duration
	// Rand returns a float in [0, 1); nil means math/rand/v2. Tests inject a
	// fixed one.
	Rand    func() float64
	attempt int
}

// Next returns the wait before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	ceil := b.Ceiling()
	if b.attempt < 62 {
		b.attempt++
	}
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return time.Duration(r() * float64(ceil))
}

// Ceiling is the upper bound of the next wait.
func (b *Backoff) Ceiling() time.Duration {
	ceil := b.Cap
	if b.attempt < 62 {
		if d := b.Base << b.attempt; d > 0 && d < ceil {
			ceil = d
		}
	}
	return ceil
}

// Reset starts the schedule over; call it once a stream proved healthy.
func (b *Backoff) Reset() { b.attempt = 0 }
