package main

import (
	"context"

	"github.com/line-agent/line-agent/messages"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// noDriver offers nothing: every command fails UNSUPPORTED.
type noDriver struct{}

func (noDriver) Capabilities() []linev1.Capability { return nil }

func (noDriver) Execute(_ context.Context, cmd *linev1.Command, _ func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	return nil, messages.Unsupported(messages.Kind(cmd), "no Messages driver is wired on this Mac yet")
}
