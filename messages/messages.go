// Package messages defines what the agent needs from Apple's Messages app: a
// Driver that runs commands and reports what works on this Mac. Every
// driver fails with a typed command.Error, so that the relay's caller can
// act on a failure, and takes commands the agent's dispatcher has already
// checked (a kind, a line it serves, the capabilities command.Needs
// lists).
//
// The drivers live in subpackages: applescript (plain sends through osascript),
// bridge (the private-API helper inside Messages), sim (a simulated Messages for
// Linux, CI and demos). Inbound changes do not go through a Driver: every
// Messages, real or simulated, ends in rows in a chat.db file that the chatdb
// package reads.
package messages

import (
	"context"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Driver runs commands against Messages. Implementations must be safe for
// concurrent use: the agent runs commands for different chats at once, and
// commands for one chat strictly one after another.
type Driver interface {
	// Capabilities reports exactly what works right now. It can change while
	// the agent runs (the private-API helper connects or goes away).
	Capabilities() []linev1.Capability

	// Execute runs cmd to its truthful end: it returns a Snapshot only once
	// Messages accepted the action and its row is visible in chat.db (for a
	// background, once the asset is distributable). report, never nil, sends
	// progress to the relay; it must not block for long. Failures are *command.Error
	// values (use command.AsError); ctx carries the command's deadline.
	Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error)
}

// Offerer is a Driver that can tell what it offers with its private-API
// helper connected, while the helper is away for a moment (a crash,
// Messages restarting): a command then is the driver's to answer
// (HELPER_UNAVAILABLE, nothing sent, retryable), not UNSUPPORTED, which
// tells the caller this Mac cannot do it at all.
type Offerer interface {
	Offered() []linev1.Capability
}

// Offered is what d offers with its helper connected: Offerer's answer, or
// its Capabilities.
func Offered(d Driver) []linev1.Capability {
	if o, ok := d.(Offerer); ok {
		return o.Offered()
	}
	return d.Capabilities()
}
