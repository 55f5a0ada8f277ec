package command

import (
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Check is the first door's judgement of a command, the same at the relay's
// submit and at the agent's dispatcher (a command may come from a relay
// that did not check it): a kind is present, every field is within its
// bound (CheckBounds), the line is a line (CheckLine), every handle is a
// handle (CheckHandle) and the chat GUID is one (ParseChatGUID). Drivers
// take commands that passed it, so a bad command gets this one error
// whichever driver would have run it.
func Check(cmd *linev1.Command, now time.Time) *Error {
	if cmd == nil {
		return invalid("a command is required")
	}
	if KindName(cmd) == "" {
		return invalid("a command kind is required (send_text, typing, react, ...)")
	}
	if err := CheckBounds(cmd, now); err != nil {
		return err
	}
	if err := CheckLine(cmd.GetLine()); err != nil {
		return err
	}
	if g := cmd.GetChatGuid(); g != "" {
		if _, err := ParseChatGUID(g); err != nil {
			return err
		}
	}
	for _, h := range cmd.GetParticipants().GetHandles() {
		if err := CheckHandle(h); err != nil {
			return err
		}
	}
	for _, h := range cmd.GetCreateChat().GetParticipants() {
		if err := CheckHandle(h); err != nil {
			return err
		}
	}
	if lh := cmd.GetLookupHandle(); lh != nil {
		if err := CheckHandle(lh.GetHandle()); err != nil {
			return err
		}
	}
	return nil
}
