package applescript

// The scripts are constants: osascript reads one of them on standard input and
// every value (text, file path, chat GUID, handle) arrives as an item of argv
// in `on run argv`. AppleScript treats argv items as text values, never as
// source, so nothing a caller sends can become code. Each script sends exactly
// once and returns nothing: AppleScript has no message GUID to give back, so
// the row in chat.db is the only witness of what happened.

// scriptTextToChat sends argv[1] (text) to the chat whose GUID is argv[2].
// `chat id` looks the chat up by GUID; `chat "<x>"` would match a display name.
const scriptTextToChat = `on run argv
	set theText to item 1 of argv
	set theChatID to item 2 of argv
	tell application "Messages"
		send theText to chat id theChatID
	end tell
end run
`

// scriptTextToParticipant sends argv[1] (text) to the handle argv[2] on the
// first iMessage account, which opens (or reuses) the one-to-one chat. This
// is the only way to reach someone Messages has no chat with yet.
const scriptTextToParticipant = `on run argv
	set theText to item 1 of argv
	set theHandle to item 2 of argv
	tell application "Messages"
		set theAccount to 1st account whose service type = iMessage
		send theText to participant theHandle of theAccount
	end tell
end run
`

// scriptFileToChat sends the file at POSIX path argv[1] to the chat whose
// GUID is argv[2]. The file must be somewhere sandboxed Messages can read.
const scriptFileToChat = `on run argv
	set theFile to POSIX file (item 1 of argv)
	set theChatID to item 2 of argv
	tell application "Messages"
		send theFile to chat id theChatID
	end tell
end run
`

// scriptFileToParticipant sends the file at POSIX path argv[1] to the handle
// argv[2] on the first iMessage account.
const scriptFileToParticipant = `on run argv
	set theFile to POSIX file (item 1 of argv)
	set theHandle to item 2 of argv
	tell application "Messages"
		set theAccount to 1st account whose service type = iMessage
		send theFile to participant theHandle of theAccount
	end tell
end run
`
