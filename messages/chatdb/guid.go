package chatdb

import "strings"

// chatServices are the service prefixes a chat GUID can carry. macOS 26 adds
// "any", which names the same conversation as the older spellings.
var chatServices = []string{"iMessage", "SMS", "RCS", "any"}

// NormalizeChatGUID returns the comparison key of a chat GUID: the GUID
// without its service prefix, with an email identifier lower-cased, so that
// "iMessage;-;+15551234567", "SMS;-;+15551234567" and "any;-;+15551234567"
// compare equal. It exists because the same chat appears under several
// spellings across services and macOS versions, and de-duplicating on the raw
// GUID produced double events in other bridges. The result is a key, not a
// GUID: events keep the original spelling. A string that is not a chat GUID
// is returned unchanged.
func NormalizeChatGUID(guid string) string {
	service, rest, ok := strings.Cut(guid, ";")
	if !ok {
		return guid
	}
	known := false
	for _, s := range chatServices {
		if strings.EqualFold(service, s) {
			known = true
			break
		}
	}
	if !known {
		return guid
	}
	style, ident, ok := strings.Cut(rest, ";")
	if !ok || (style != "-" && style != "+") {
		return guid
	}
	return style + ";" + CanonicalHandle(ident)
}

// CanonicalHandle returns a handle as Messages stores (handle.id, the
// identifier of a one-to-one chat's GUID) and compares it: an email address
// lower-cased, so "Alice@Example.com" and "alice@example.com" are one
// handle and one chat; a phone number unchanged. It is the one place of this
// rule for chatdb and the packages that write or look up chats and handles
// like Messages (messages/sim, messages/simhelper, messages/bridge).
func CanonicalHandle(h string) string {
	if strings.Contains(h, "@") {
		return strings.ToLower(h)
	}
	return h
}

// CanonicalChatGUID returns a chat GUID as Messages stores it: its
// identifier in CanonicalHandle form ("iMessage;-;Alice@Example.com" is
// "iMessage;-;alice@example.com"), the service prefix kept. A string that
// is not "<service>;<-|+>;<identifier>" is returned unchanged.
func CanonicalChatGUID(guid string) string {
	service, rest, ok := strings.Cut(guid, ";")
	if !ok {
		return guid
	}
	style, ident, ok := strings.Cut(rest, ";")
	if !ok || (style != "-" && style != "+") {
		return guid
	}
	return service + ";" + style + ";" + CanonicalHandle(ident)
}

// chatLikePattern is the LIKE pattern (ESCAPE '\') that finds the chat rows
// chatGUID may name under any service prefix: "%;<style>;<identifier>",
// the identifier in canonical form. SQLite's LIKE ignores ASCII case, so a
// chat row written in another case is found too; callers then compare
// NormalizeChatGUID keys.
func chatLikePattern(chatGUID string) string {
	_, tail, _ := strings.Cut(CanonicalChatGUID(chatGUID), ";")
	return "%;" + escapeLike(tail)
}

// SameChat reports whether two chat GUIDs name the same conversation,
// whatever their service prefix.
func SameChat(a, b string) bool { return NormalizeChatGUID(a) == NormalizeChatGUID(b) }

// lineFromAccount turns message.account ("p:+1555...", "e:addr") or
// chat.account_login ("P:+1555...", "E:addr") into the line it names.
func lineFromAccount(a string) string {
	if len(a) > 2 && a[1] == ':' {
		switch a[0] {
		case 'p', 'P', 'e', 'E':
			return a[2:]
		}
	}
	return a
}
