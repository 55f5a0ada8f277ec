package bridge

import (
	"bytes"
	"encoding/json"
	"maps"
	"strconv"
)

// Actions the agent sends. The first group is the BlueBubbles helper's own
// vocabulary (its names and payloads are fixed by that helper); the second is
// line-agent's, answered only by a line-agent-aware helper.
const (
	ActionSendMessage     = "send-message"
	ActionSendAttachment  = "send-attachment"
	ActionSendReaction    = "send-reaction"
	ActionStartTyping     = "start-typing"
	ActionStopTyping      = "stop-typing"
	ActionMarkChatRead    = "mark-chat-read"
	ActionEditMessage     = "edit-message"
	ActionUnsendMessage   = "unsend-message"
	ActionCreateChat      = "create-chat"
	ActionSetDisplayName  = "set-display-name"
	ActionCheckIMessage   = "check-imessage-availability"
	ActionHello           = "line-agent-hello"
	ActionSetBackground   = "set-chat-background"
	ActionClearBackground = "clear-chat-background"
)

const (
	// lineAgentProtocol is the version of the extensions this bridge speaks.
	lineAgentProtocol  = 1
	transactionIDKey   = "transactionId"
	maxLoggedLineBytes = 200
)

// Features a line-agent helper can announce besides actions.
const (
	// FeatureLineFraming: the helper splits its input on newlines, so the
	// bridge may write requests back to back without WriteGap.
	FeatureLineFraming = "line-framing"
	// FeatureEmojiTapback: send-reaction takes reactionType "emoji" /
	// "-emoji" with an "emoji" field (associated_message_type 2006/3006).
	FeatureEmojiTapback = "emoji-tapback"
	// FeatureCreateChatEmpty: create-chat accepts a null or absent
	// "message" and then only creates the chat (sending nothing), answering
	// its "chatGuid". The BlueBubbles helper creates a chat only by sending
	// its first message.
	FeatureCreateChatEmpty = "create-chat-empty"
)

// featureWhy words a missing feature's UNSUPPORTED error where the generic
// wording would not say what to do instead.
var featureWhy = map[string]string{
	FeatureCreateChatEmpty: "the connected helper can only create a chat by sending its first message " +
		"(give first_message, or connect a line-agent helper that announces the \"" + FeatureCreateChatEmpty + "\" feature); nothing was sent",
}

// baseActions is what every BlueBubbles helper (macOS 11+) answers; a helper
// that does not answer line-agent-hello is assumed to have exactly these.
var baseActions = []string{
	ActionSendMessage, ActionSendAttachment, ActionSendReaction,
	ActionStartTyping, ActionStopTyping, ActionMarkChatRead,
	ActionEditMessage, ActionUnsendMessage, ActionCreateChat,
	ActionSetDisplayName, ActionCheckIMessage,
}

// request is one line the agent writes.
type request struct {
	Action        string `json:"action"`
	Data          any    `json:"data"`
	TransactionID string `json:"transactionId"`
}

// answer is a helper's reply to a transaction: the BlueBubbles helper puts
// the message GUID in "identifier" and other results ("available", ...) next
// to transactionId; newer helpers may nest them under "data". fields holds
// both, data winning.
type answer struct {
	identifier string
	fields     map[string]json.RawMessage
}

func (a *answer) str(key string) string {
	var s string
	if a != nil && json.Unmarshal(a.fields[key], &s) == nil {
		return s
	}
	return ""
}

func (a *answer) boolean(key string) (v, ok bool) {
	if a == nil {
		return false, false
	}
	raw := bytes.TrimSpace(a.fields[key])
	if json.Unmarshal(raw, &v) == nil {
		return v, true
	}
	// Objective-C's NSNumber from a BOOL can arrive as 0/1.
	if n, err := strconv.Atoi(string(raw)); err == nil {
		return n != 0, true
	}
	return false, false
}

func (a *answer) list(key string) []string {
	var s []string
	if a != nil {
		_ = json.Unmarshal(a.fields[key], &s)
	}
	return s
}

// parseAnswer builds an answer (or the helper's error text) from a decoded
// line that carries a transactionId.
func parseAnswer(m map[string]json.RawMessage) (*answer, string) {
	if msg := helperErrorText(m["error"]); msg != "" {
		return nil, msg
	}
	a := &answer{fields: map[string]json.RawMessage{}}
	for k, v := range m {
		switch k {
		case transactionIDKey, "error", "identifier", "data":
		default:
			a.fields[k] = v
		}
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(m["data"], &data) == nil {
		maps.Copy(a.fields, data)
	}
	_ = json.Unmarshal(m["identifier"], &a.identifier)
	return a, ""
}

// helperErrorText is the error a helper reported, "" for none: the helpers
// send a string, but anything not empty or null counts.
func helperErrorText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` || string(raw) == "false" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// transactionID reads the id of an answer, accepting a number as well as a
// string (the id is ours, but a helper may echo it in either form).
func transactionID(m map[string]json.RawMessage) string {
	raw := bytes.TrimSpace(m[transactionIDKey])
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// clip shortens a line for a log record: a malformed line can be long and
// may carry message text, which does not belong in logs in full.
func clip(b []byte) string {
	if len(b) > maxLoggedLineBytes {
		return string(b[:maxLoggedLineBytes]) + "..."
	}
	return string(b)
}

// nullable is nil for "", so optional fields travel as JSON null, the way the
// BlueBubbles server sends them and its helper expects.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
