package chatdb

import (
	"github.com/line-agent/line-agent/command"
)

// chatLikePattern is the LIKE pattern (ESCAPE '\') that finds the chat rows
// chatGUID may name under any service prefix: "%;<style>;<identifier>",
// the identifier in canonical form (command.ChatKey). SQLite's LIKE ignores
// ASCII case, so a chat row written in another case is found too; callers
// then compare command.ChatKey keys.
func chatLikePattern(chatGUID string) string {
	return "%;" + escapeLike(command.ChatKey(chatGUID))
}

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
