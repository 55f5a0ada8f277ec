package messages

import (
	"context"

	"github.com/line-agent/line-agent/pkg/procid"
)

// Attempt is what a driver notes about a command just before the step that
// may make Messages act, so that after a crash the agent can tell whether
// that step can still have an effect (the reconciliation of
// docs/reliability.md). It is durable once NoteAttempt returns nil.
type Attempt struct {
	// Process is the child the command was handed to (the osascript run of
	// an AppleScript send), named with its start time so that a pid reused
	// later is not taken for it. While it lives, Messages may still act.
	Process *procid.ID `json:"process,omitempty"`
}

type attemptKey struct{}

// WithAttemptNoter returns a context whose NoteAttempt calls note. The
// agent's dispatcher installs one that writes to the journal.
func WithAttemptNoter(ctx context.Context, note func(Attempt) error) context.Context {
	return context.WithValue(ctx, attemptKey{}, note)
}

// NoteAttempt records a, durably when the agent installed a noter (a no-op
// otherwise). A driver notes before it lets the step run (osascript gets
// its script only after the note) and must not let it run when the note
// fails: a crash would then leave a child nobody knows of.
func NoteAttempt(ctx context.Context, a Attempt) error {
	if note, ok := ctx.Value(attemptKey{}).(func(Attempt) error); ok && note != nil {
		return note(a)
	}
	return nil
}
