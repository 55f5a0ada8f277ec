package bridge

import (
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// capNeeds says which helper actions make a capability work. The send
// features (effect, reply, subject) are fields of send-message, which every
// BlueBubbles helper honours. Typing needs both directions.
var capNeeds = []struct {
	capability linev1.Capability
	actions    []string
}{
	{linev1.Capability_CAPABILITY_SEND_TEXT, []string{ActionSendMessage}},
	{linev1.Capability_CAPABILITY_SEND_ATTACHMENT, []string{ActionSendAttachment}},
	{linev1.Capability_CAPABILITY_TYPING, []string{ActionStartTyping, ActionStopTyping}},
	{linev1.Capability_CAPABILITY_REACT, []string{ActionSendReaction}},
	{linev1.Capability_CAPABILITY_EDIT, []string{ActionEditMessage}},
	{linev1.Capability_CAPABILITY_UNSEND, []string{ActionUnsendMessage}},
	{linev1.Capability_CAPABILITY_MARK_READ, []string{ActionMarkChatRead}},
	{linev1.Capability_CAPABILITY_SET_BACKGROUND, []string{ActionSetBackground}},
	{linev1.Capability_CAPABILITY_CLEAR_BACKGROUND, []string{ActionClearBackground}},
	{linev1.Capability_CAPABILITY_CREATE_CHAT, []string{ActionCreateChat}},
	{linev1.Capability_CAPABILITY_RENAME_GROUP, []string{ActionSetDisplayName}},
	{linev1.Capability_CAPABILITY_LOOKUP_HANDLE, []string{ActionCheckIMessage}},
	{linev1.Capability_CAPABILITY_EFFECT, []string{ActionSendMessage}},
	{linev1.Capability_CAPABILITY_REPLY, []string{ActionSendMessage}},
	{linev1.Capability_CAPABILITY_SUBJECT, []string{ActionSendMessage}},
}

// capabilitiesOf lists, in a stable order, the capabilities a helper with
// these actions provides.
func capabilitiesOf(actions map[string]bool) []linev1.Capability {
	var out []linev1.Capability
	for _, n := range capNeeds {
		ok := true
		for _, a := range n.actions {
			ok = ok && actions[a]
		}
		if ok {
			out = append(out, n.capability)
		}
	}
	return out
}

// capabilityOf is the capability an action serves, for UNSUPPORTED errors.
func capabilityOf(action string) linev1.Capability {
	for _, n := range capNeeds {
		for _, a := range n.actions {
			if a == action {
				return n.capability
			}
		}
	}
	return linev1.Capability_CAPABILITY_UNSPECIFIED
}

func isBaseAction(action string) bool {
	for _, a := range baseActions {
		if a == action {
			return true
		}
	}
	return false
}

func setOf(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}
