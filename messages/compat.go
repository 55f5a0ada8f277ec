package messages

import "github.com/line-agent/line-agent/command"

// Forwarding names for the few files still moving to package command, where
// the command vocabulary now lives. Deleted once no caller uses them.
type Error = command.Error

var (
	Errorf         = command.Errorf
	Unsupported    = command.Unsupported
	AsError        = command.AsError
	CodeName       = command.CodeName
	CapabilityName = command.CapabilityName
	Kind           = command.Kind
	KindName       = command.KindName
	Needs          = command.Needs
)
