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
	if strings.Contains(ident, "@") {
		ident = strings.ToLower(ident)
	}
	return style + ";" + ident
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
