package simhelper

import (
	"log/slog"
	"time"
)

// Options configure a Helper. Zero values give a well-behaved line-agent
// helper backed by a fresh Memory.
type Options struct {
	// Addr is the bridge's address (host:port).
	Addr string
	// Messages answers the actions. Default: NewMemory().
	Messages Messages
	// Base makes a plain BlueBubbles helper: it ignores line-agent-hello
	// and the line-agent actions (no answer, as the real one does), and
	// rejects emoji tapbacks.
	Base bool
	// ChunkReads parses each socket read as one message, cutting at
	// "}\n{" like the BlueBubbles helper does: requests that arrive in one
	// read are lost (Coalesced counts them), and so is a request split
	// over two reads. Such a helper does not split its input on newlines,
	// so it never announces "line-framing". Use it to prove the bridge's
	// write pacing.
	ChunkReads bool
	// ReadPause, with ChunkReads, is how long the helper takes after each
	// read before it reads again. The BlueBubbles helper asks for its next
	// read only once it has handled the last one, on Messages' own queue,
	// so whatever arrives meanwhile shares one read; a pause makes that
	// window wide enough for a test to hit it for certain. 0 reads again
	// at once.
	ReadPause time.Duration
	// Process is the app named in the ping. Default "com.apple.MobileSMS".
	Process string
	// Withhold lists actions this helper neither announces nor answers.
	Withhold []string
	// WithholdFeatures lists line-agent features ("line-framing",
	// "emoji-tapback", "create-chat-empty") this helper neither announces
	// nor honours: emoji tapbacks and create-chat without a message are
	// then refused as a BlueBubbles helper would.
	WithholdFeatures []string
	// Delay is waited before answering each action.
	Delay time.Duration
	// Fail maps an action to the error text answered for it.
	Fail map[string]string
	// Silent lists actions that are received but never answered.
	Silent []string
	// DisconnectAfter, when > 0, drops the connection on the Nth request
	// (without answering it), once; the helper then reconnects.
	DisconnectAfter int
	// DropAfterActingEvery, when > 0, acts on every Nth request and then
	// drops the connection instead of answering: the helper crashing in
	// the middle of a transaction, its effect in chat.db and its answer
	// lost. The helper then reconnects.
	DropAfterActingEvery int
	// MinBackoff and MaxBackoff bound the reconnect delay. Defaults 20 ms
	// and 1 s (the real helper waits 5 s).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives what the helper does. Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Messages == nil {
		o.Messages = NewMemory()
	}
	if o.Process == "" {
		o.Process = "com.apple.MobileSMS"
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 20 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(time.Second, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
