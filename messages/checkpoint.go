package messages

import (
	"context"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Resumable is a Driver whose long commands (a background upload that takes
// a minute) can be picked up after the agent restarts, instead of being
// reported IN_DOUBT or, worse, run again. Execute saves checkpoints with
// SaveCheckpoint; after a restart the agent calls Resume with the last one.
type Resumable interface {
	// Resume continues cmd from checkpoint to its truthful end, without
	// repeating what the checkpoint says already happened (no second upload).
	Resume(ctx context.Context, cmd *linev1.Command, checkpoint []byte, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error)
}

type checkpointKey struct{}

// WithCheckpointer returns a context whose SaveCheckpoint calls save. The
// agent's dispatcher installs one that writes to the journal.
func WithCheckpointer(ctx context.Context, save func([]byte)) context.Context {
	return context.WithValue(ctx, checkpointKey{}, save)
}

// SaveCheckpoint records how far a command got, durably when the agent
// installed a checkpointer (a no-op otherwise). Save before each step whose
// repetition would be wrong (before asking Messages to upload) and whenever
// the state worth resuming from changes.
func SaveCheckpoint(ctx context.Context, state []byte) {
	if save, ok := ctx.Value(checkpointKey{}).(func([]byte)); ok && save != nil {
		save(state)
	}
}
