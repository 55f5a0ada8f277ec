package bridge

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"
)

// Defaults for Options. The port and the 200 ms write gap come from the
// BlueBubbles server, whose helper we must keep working unchanged; the
// 50 ms answer gap is line-agent's (see AnswerGap).
const (
	// BasePort is the helper's port for the first macOS user (uid 501); each
	// further user gets the next port, so several users on one Mac do not
	// collide. The BlueBubbles helper computes the same number.
	BasePort = 45670
	// firstUID is the uid macOS gives the first user account.
	firstUID = 501
	maxPort  = 65535

	DefaultRequestTimeout   = 15 * time.Second
	DefaultHandshakeTimeout = 2 * time.Second
	DefaultMaxLineBytes     = 1 << 20
	DefaultEventBuffer      = 256
	DefaultWriteGap         = 200 * time.Millisecond
	DefaultAnswerGap        = 50 * time.Millisecond
	DefaultWriteTimeout     = 5 * time.Second
)

// Options configure Listen. Zero values take the defaults above.
type Options struct {
	// Addr is the loopback address the helper dials. Default DefaultAddr().
	// The host "localhost" listens on both 127.0.0.1 and ::1, because the
	// BlueBubbles helper dials the name "localhost" and may try either.
	Addr string
	// RequestTimeout bounds each request when the caller's context has no
	// earlier deadline: a helper that never answers must not hold a
	// command forever.
	RequestTimeout time.Duration
	// HandshakeTimeout is how long the bridge waits for an answer to
	// "line-agent-hello" before treating the helper as a plain BlueBubbles
	// helper (which ignores actions it does not know).
	HandshakeTimeout time.Duration
	// MaxLineBytes bounds one JSON line in either direction, so a helper
	// gone wrong cannot make the agent buffer without limit.
	MaxLineBytes int
	// EventBuffer is the capacity of Events(); when it is full the oldest
	// event is dropped and counted.
	EventBuffer int
	// Pacing is how writes to a helper that did not announce line framing
	// are spaced. The BlueBubbles helper parses each socket read as one
	// message, so two requests arriving in one read lose the second; a
	// write must not go before the helper has read the previous one.
	// PacingAnswers (the default) sends the next write once the previous
	// request is answered (an answer proves it was read) or AnswerGap has
	// passed; PacingFixed waits WriteGap after every write, as BlueBubbles
	// Server does, for an operator to fall back to.
	Pacing Pacing
	// WriteGap is PacingFixed's pause between two writes (default 200 ms,
	// BlueBubbles Server's). Negative turns pacing off in either mode:
	// for tests, and for the benchmark's coalescing baseline.
	WriteGap time.Duration
	// AnswerGap is the longest PacingAnswers holds a write back waiting for
	// the previous request's answer; a request without a transaction id,
	// which is never answered, is always followed this long after. It must
	// exceed the time a helper that has not answered yet may take to read
	// what it was sent, which only a real Mac can show (docs/bridge.md,
	// "Pacing"); 50 ms is a quarter of BlueBubbles Server's fixed gap and
	// three frames of Messages' main thread. Default DefaultAnswerGap.
	AnswerGap time.Duration
	// WriteTimeout bounds one socket write; a helper that stops reading is
	// dropped instead of blocking every caller.
	WriteTimeout time.Duration
	// Logger receives connection changes and protocol problems. Default:
	// discard.
	Logger *slog.Logger
	// Observer, when set, hears every request's round trip (metrics);
	// nil hears nothing.
	Observer RoundTripObserver
	// Verifier, when set, must accept each connecting process before the
	// bridge reads or writes anything on its connection (PeerVerifier);
	// nil accepts any loopback peer (the simulated backend, whose helper
	// runs in the agent's own process).
	Verifier PeerVerifier
	// VerifyTimeout bounds one Verifier call; past it the connection is
	// refused. Default DefaultVerifyTimeout.
	VerifyTimeout time.Duration
}

// RoundTripObserver hears each helper request once it has its answer or
// has failed, so the agent can measure the helper without the bridge
// knowing how it is measured. action is the request's action (a fixed
// vocabulary, wire.go); result is "ok" or the failure's code name
// (HELPER_UNAVAILABLE, DEADLINE_EXCEEDED...). It is called on the
// requesting goroutine and must not block.
type RoundTripObserver interface {
	HelperRoundTrip(action, result string, took time.Duration)
}

// DefaultAddr is 127.0.0.1 on the port the BlueBubbles helper dials for this
// user: 45670 + uid - 501, kept within 45670..65535.
func DefaultAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(portForUID(os.Getuid())))
}

func portForUID(uid int) int {
	return min(max(BasePort+uid-firstUID, BasePort), maxPort)
}

func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = DefaultAddr()
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	if o.Pacing == "" {
		o.Pacing = PacingAnswers
	}
	if o.WriteGap == 0 {
		o.WriteGap = DefaultWriteGap
	}
	if o.AnswerGap <= 0 {
		o.AnswerGap = DefaultAnswerGap
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.VerifyTimeout <= 0 {
		o.VerifyTimeout = DefaultVerifyTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Pacing names how the bridge spaces its writes to a helper that reads one
// message per socket read (Options.Pacing).
type Pacing string

// The pacings. Their names are what LINE_AGENT_HELPER_PACING takes.
const (
	// PacingAnswers: the next write goes once the previous request is
	// answered or Options.AnswerGap has passed, whichever is first.
	PacingAnswers Pacing = "answers"
	// PacingFixed: every write waits Options.WriteGap after the previous
	// one, as BlueBubbles Server spaces its own.
	PacingFixed Pacing = "fixed"
)

// ParsePacing reads a pacing's name; "" is the default, PacingAnswers.
// Anything else is an error naming the valid values, so a mistyped
// setting stops the agent instead of silently pacing some other way.
func ParsePacing(s string) (Pacing, error) {
	switch p := Pacing(s); p {
	case "":
		return PacingAnswers, nil
	case PacingAnswers, PacingFixed:
		return p, nil
	}
	return "", fmt.Errorf("unknown helper pacing %q: want %q or %q", s, PacingAnswers, PacingFixed)
}
