package command

import (
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Kind returns the command kind's capability, or CAPABILITY_UNSPECIFIED for a
// command without a kind and for a read (IsRead), which needs none.
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
	case *linev1.Command_FetchAttachment:
		return linev1.Capability_CAPABILITY_FETCH_ATTACHMENT
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

// IsRead reports whether cmd only reads chat.db (get_message, get_chat).
// A read changes nothing in Messages: the agent answers it from chat.db,
// which every driver has, without journaling it, so a repeat or a
// redelivery after a crash simply reads again instead of being IN_DOUBT.
func IsRead(cmd *linev1.Command) bool {
	switch cmd.GetKind().(type) {
	case *linev1.Command_GetMessage, *linev1.Command_GetChat:
		return true
	}
	return false
}

// Needs lists the capabilities a command requires: its kind, plus the
// features it uses (an effect, a reply, a subject). A read needs none:
// reading chat.db is what every agent does.
func Needs(cmd *linev1.Command) []linev1.Capability {
	if IsRead(cmd) {
		return nil
	}
	need := []linev1.Capability{Kind(cmd)}
	var effect, subject string
	var reply *linev1.ReplyTo
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		effect, subject, reply = k.SendText.GetEffect(), k.SendText.GetSubject(), k.SendText.GetReplyTo()
	case *linev1.Command_SendAttachment:
		effect, reply = k.SendAttachment.GetEffect(), k.SendAttachment.GetReplyTo()
	}
	if effect != "" {
		need = append(need, linev1.Capability_CAPABILITY_EFFECT)
	}
	if subject != "" {
		need = append(need, linev1.Capability_CAPABILITY_SUBJECT)
	}
	if reply != nil && reply.GetMessageGuid() != "" {
		need = append(need, linev1.Capability_CAPABILITY_REPLY)
	}
	return need
}
