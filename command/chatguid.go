package command

import (
	"strings"
	"unicode"
)

// chatServices are the service prefixes a chat GUID can carry, as Messages
// spells them. macOS 26 adds "any", which names the same conversation as
// the older spellings.
var chatServices = []string{"iMessage", "SMS", "RCS", "any"}

// ChatGUID is a chat GUID taken apart: "<service>;-;<handle>" is a chat with
// one person, "<service>;+;<identifier>" a group.
type ChatGUID struct {
	// Service is "iMessage", "SMS", "RCS" or "any", spelled so.
	Service string
	// Group is true for ";+;".
	Group bool
	// ID is the other person's handle in its one spelling (NormalizeLine)
	// for a one-to-one chat, the chat identifier ("chat123...") for a
	// group.
	ID string
}

// String is the GUID as Messages stores it ("iMessage;-;+15551234567").
func (g ChatGUID) String() string { return g.Service + ";" + g.tail() }

// Key is the comparison key of the chat: the GUID without its service, so
// that "iMessage;-;x", "SMS;-;x" and "any;-;x" are one conversation. It is
// a key, not a GUID.
func (g ChatGUID) Key() string { return g.tail() }

func (g ChatGUID) tail() string {
	if g.Group {
		return "+;" + g.ID
	}
	return "-;" + g.ID
}

// ParseChatGUID checks a chat GUID's shape and returns its parts, the
// identifier of a one-to-one chat in its one handle spelling (an email in
// lower case, a phone number without formatting) and the service in
// Messages' spelling: what every driver sends onward and compares. A
// one-to-one identifier need not be a handle CheckHandle accepts (a
// business chat's is a "urn:biz:" URN), but no identifier may be empty or
// hold a ";", a space or a control character.
func ParseChatGUID(s string) (ChatGUID, *Error) {
	if len(s) > MaxChatGUIDBytes {
		return ChatGUID{}, invalid("chat_guid is %d bytes; at most %d are accepted", len(s), MaxChatGUIDBytes)
	}
	bad := func() (ChatGUID, *Error) {
		return ChatGUID{}, invalid("chat_guid %q is not a chat GUID (want <service>;-;<handle> or <service>;+;<chat id>, the service iMessage, SMS, RCS or any)", s)
	}
	service, rest, ok := strings.Cut(s, ";")
	if !ok {
		return bad()
	}
	style, id, ok := strings.Cut(rest, ";")
	if !ok || (style != "-" && style != "+") {
		return bad()
	}
	g := ChatGUID{Group: style == "+", ID: id}
	for _, known := range chatServices {
		if strings.EqualFold(service, known) {
			g.Service = known
		}
	}
	if !g.Group {
		g.ID = NormalizeLine(id)
	}
	if g.Service == "" || g.ID == "" || strings.IndexFunc(g.ID, func(r rune) bool { return r == ';' || unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return bad()
	}
	return g, nil
}

// CanonicalChatGUID returns a chat GUID as Messages stores it
// (ParseChatGUID's spelling): "iMessage;-;Alice@Example.com" is
// "iMessage;-;alice@example.com". A string that is not a chat GUID is
// returned unchanged.
func CanonicalChatGUID(s string) string {
	g, err := ParseChatGUID(s)
	if err != nil {
		return s
	}
	return g.String()
}

// ChatKey returns the comparison key of a chat GUID (ChatGUID.Key), so that
// "iMessage;-;+15551234567", "SMS;-;+15551234567" and
// "any;-;+15551234567" compare equal: the same chat appears under several
// spellings across services and macOS versions, and de-duplicating on the
// raw GUID produced double events in other bridges. A string that is not a
// chat GUID is returned unchanged.
func ChatKey(s string) string {
	g, err := ParseChatGUID(s)
	if err != nil {
		return s
	}
	return g.Key()
}

// SameChat reports whether two chat GUIDs name the same conversation,
// whatever their service prefix or the case of an email identifier.
func SameChat(a, b string) bool { return ChatKey(a) == ChatKey(b) }

// PlatformChatGUID is the spelling the platform's SDK accepts:
// "any;-;<handle>" or "any;+;<id>" (spectrum-ts refuses any other before it
// sends anything). Every chat GUID line-relay's platform API returns, in
// responses and in events, is spelled so; chat.db's own spellings
// ("iMessage;-;...") never reach an SDK application. A string that is not a
// chat GUID is returned unchanged.
func PlatformChatGUID(s string) string {
	g, err := ParseChatGUID(s)
	if err != nil {
		return s
	}
	g.Service = "any"
	return g.String()
}
