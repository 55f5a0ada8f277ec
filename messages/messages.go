// Package messages defines what the agent needs from Apple's Messages app: a
// Driver that runs commands and reports what works on this Mac, and the typed
// Error every driver returns so that the relay's caller can act on a failure.
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
	// progress to the relay; it must not block for long. Failures are *Error
	// values (use AsError); ctx carries the command's deadline.
	Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error)
}

// Kind returns the command kind's capability, or CAPABILITY_UNSPECIFIED for a
// command without a kind.
func Kind(cmd *linev1.Command) linev1.Capability {
	switch cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		return linev1.Capability_CAPABILITY_SEND_TEXT
	case *linev1.Command_SendAttachment:
		return linev1.Capability_CAPABILITY_SEND_ATTACHMENT
	case *linev1.Command_Typing:
		return linev1.Capability_CAPABILITY_TYPING
	case *linev1.Command_React:
		return linev1.Capability_CAPABILITY_REACT
	case *linev1.Command_Edit:
		return linev1.Capability_CAPABILITY_EDIT
	case *linev1.Command_Unsend:
		return linev1.Capability_CAPABILITY_UNSEND
	case *linev1.Command_MarkRead:
		return linev1.Capability_CAPABILITY_MARK_READ
	case *linev1.Command_SetBackground:
		return linev1.Capability_CAPABILITY_SET_BACKGROUND
	case *linev1.Command_ClearBackground:
		return linev1.Capability_CAPABILITY_CLEAR_BACKGROUND
	case *linev1.Command_CreateChat:
		return linev1.Capability_CAPABILITY_CREATE_CHAT
	case *linev1.Command_RenameGroup:
		return linev1.Capability_CAPABILITY_RENAME_GROUP
	case *linev1.Command_LookupHandle:
		return linev1.Capability_CAPABILITY_LOOKUP_HANDLE
	}
	return linev1.Capability_CAPABILITY_UNSPECIFIED
}

// KindName is the command kind as its oneof field name ("send_text"), the
// spelling operators see in logs and the HTTP API.
func KindName(cmd *linev1.Command) string {
	if cmd == nil || cmd.ProtoReflect().WhichOneof(cmd.ProtoReflect().Descriptor().Oneofs().ByName("kind")) == nil {
		return ""
	}
	return string(cmd.ProtoReflect().WhichOneof(cmd.ProtoReflect().Descriptor().Oneofs().ByName("kind")).Name())
}
