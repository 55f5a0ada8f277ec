package applescript

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// target is where a command goes: a chat by GUID, or one person by handle.
type target struct {
	// chat is the caller's chat GUID in its one spelling
	// (command.ParseChatGUID); its zero value for a participant send.
	chat command.ChatGUID
	// handle is the normalised participant, empty for a chat send.
	handle string
}

// parseTarget validates the command's target with the one rule of chat
// GUIDs and handles (package command), so a target this driver refuses is
// refused by the bridge's in the same words. Several participants without
// a chat GUID would make Messages create a group, which AppleScript cannot
// do since macOS 11 (-10000): that is UNSUPPORTED before anything runs.
func parseTarget(cmd *linev1.Command) (target, error) {
	switch t := cmd.GetTarget().(type) {
	case *linev1.Command_ChatGuid:
		// Messages compares email handles without case and keeps the chat
		// under the lower-case address: the parsed GUID addresses that one.
		g, err := command.ParseChatGUID(t.ChatGuid)
		if err != nil {
			return target{}, err
		}
		return target{chat: g}, nil
	case *linev1.Command_Participants:
		hs, err := command.NormalizeHandles(t.Participants.GetHandles())
		if err != nil {
			return target{}, err
		}
		if len(hs) > 1 {
			return target{}, command.Unsupported(linev1.Capability_CAPABILITY_CREATE_CHAT,
				"sending to several participants without a chat GUID creates a group chat, which AppleScript cannot do since macOS 11 (-10000); the private-API helper can")
		}
		return target{handle: hs[0]}, nil
	}
	return target{}, invalid("command has neither a chat GUID nor participants")
}

// address is one way of naming the target to AppleScript.
type address struct {
	// chatID is a chat GUID for `chat id`; empty means participant.
	chatID string
	// handle is the participant for `participant ... of account`.
	handle string
}

func (a address) String() string {
	if a.chatID != "" {
		return "chat id " + a.chatID
	}
	return "participant " + a.handle
}

// plan lists the addresses to try in order. On macOS 26 Messages writes
// `any;-;...` GUIDs but its AppleScript rejects them as a bad service type
// (-1700): the fallbacks are the iMessage spelling of the same GUID, then,
// for a one-to-one chat whose identifier is a valid handle, the participant.
func (t target) plan() []address {
	if t.handle != "" {
		return []address{{handle: t.handle}}
	}
	out := []address{{chatID: t.chat.String()}}
	if t.chat.Service == "any" {
		imessage := t.chat
		imessage.Service = "iMessage"
		out = append(out, address{chatID: imessage.String()})
		if !t.chat.Group {
			if h, err := command.NormalizeHandle(t.chat.ID); err == nil {
				out = append(out, address{handle: h})
			}
		}
	}
	return out
}

// rowChat is the chat to look for the row in. The reader matches every
// service spelling (Messages on macOS 26 files a send to iMessage;-;x under
// any;-;x), so a participant send looks under its iMessage spelling.
func (t target) rowChat() string {
	if t.handle != "" {
		return command.ChatGUID{Service: "iMessage", ID: t.handle}.String()
	}
	return t.chat.String()
}

// scriptFor picks the constant script for a payload and address.
func scriptFor(p payload, a address) (script string, args []string) {
	first := p.text
	if p.file != "" {
		first = p.file
	}
	switch {
	case p.file != "" && a.chatID != "":
		return scriptFileToChat, []string{first, a.chatID}
	case p.file != "":
		return scriptFileToParticipant, []string{first, a.handle}
	case a.chatID != "":
		return scriptTextToChat, []string{first, a.chatID}
	}
	return scriptTextToParticipant, []string{first, a.handle}
}

// lookAfterDeadline bounds the look at chat.db (and the confirmation of a
// row found) after a command's deadline passed while osascript ran.
const lookAfterDeadline = 5 * time.Second

// send runs the plan, then confirms from chat.db.
func (s *Sender) send(ctx context.Context, cmd *linev1.Command, t target, p payload, progress func(string)) (*linev1.Snapshot, error) {
	w := s.window(ctx, s.opts.Clock.Now())
	kind := command.Kind(cmd)
	plan := t.plan()
	launched := false
	var used address
	var lastErr error
	for i, a := range plan {
		used = a
		err := s.runSend(ctx, p, a, &launched)
		if err == nil {
			lastErr = nil
			break
		}
		lastErr = err
		var se *scriptError
		if !errors.As(err, &se) || i == len(plan)-1 {
			break
		}
		// Only a bad service type (or, once a fallback is under way, a
		// missing chat) moves on: both mean Messages sent nothing.
		if se.Number == errCoercion || (i > 0 && se.Number == errNoSuchObject) {
			s.log.Info("osascript refused an address, trying the next", "command", cmd.GetId(), "address", a.String(), "next", plan[i+1].String(), "error", se.Number)
			continue
		}
		break
	}
	if lastErr != nil {
		var te *timeoutError
		switch {
		case errors.As(lastErr, &te):
			// Messages may have sent although AppleScript never answered:
			// look once before calling it a failure.
			if r := s.findOnce(ctx, t, p, w); r != nil {
				s.log.Warn("osascript timed out but the row exists; confirming", "command", cmd.GetId(), "guid", r.GUID)
				break
			}
			return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
				Msg:       fmt.Sprintf("Messages did not answer: %v", te),
				LastState: "osascript killed after " + s.opts.Timeout.String() + "; no outgoing row in chat.db", Err: te}
		case errors.Is(ctx.Err(), context.Canceled):
			// The agent is stopping: osascript was killed mid-run, so Messages
			// may or may not have taken the send.
			return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_IN_DOUBT,
				Msg: "the command was cancelled while osascript ran", LastState: "osascript running (" + used.String() + "), killed", Err: ctx.Err()}
		case ctx.Err() != nil:
			// The deadline passed while osascript ran, but Messages may have
			// sent anyway (an AppleScript that hangs after the send): look
			// once, on a short context of its own, before calling it a
			// failure that would make the caller send it again.
			look, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookAfterDeadline)
			defer cancel()
			if r := s.findOnce(look, t, p, w); r != nil {
				s.log.Warn("the deadline passed while osascript ran, but the row exists; confirming", "command", cmd.GetId(), "guid", r.GUID)
				return s.confirm(look, t, p, w)
			}
			return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED,
				Msg: "the command's deadline passed while osascript ran", LastState: "osascript running (" + used.String() + "), killed; no outgoing row in chat.db", Err: ctx.Err()}
		default:
			return nil, mapScriptError(lastErr, kind, t, used)
		}
	}
	progress("handed to Messages")
	s.log.Info("osascript accepted the send; waiting for the row", "command", cmd.GetId(), "address", used.String())
	return s.confirm(ctx, t, p, w)
}

// runSend runs one address; on -600 it launches Messages and retries once
// per command (launched records that it happened).
func (s *Sender) runSend(ctx context.Context, p payload, a address, launched *bool) error {
	script, args := scriptFor(p, a)
	_, err := s.run.run(ctx, s.opts.OsascriptPath, append([]string{"-"}, args...), script)
	var se *scriptError
	if !errors.As(err, &se) || se.Number != errNotRunning || *launched {
		return err
	}
	*launched = true
	s.log.InfoContext(ctx, "Messages is not running; launching it and retrying once")
	if _, lerr := s.run.quiet().run(ctx, s.opts.OpenPath, []string{"-g", "-a", s.opts.MessagesApp}, ""); lerr != nil {
		return &command.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
			Msg: fmt.Sprintf("Messages is not running (-600) and launching it failed: %v", lerr), Err: lerr}
	}
	select {
	case <-s.opts.Clock.After(s.opts.LaunchWait):
	case <-ctx.Done():
		return ctx.Err()
	}
	_, err = s.run.run(ctx, s.opts.OsascriptPath, append([]string{"-"}, args...), script)
	return err
}

// mapScriptError turns an osascript failure into the error a caller can act
// on. Typed errors (a failed launch) pass through.
func mapScriptError(err error, kind linev1.Capability, t target, a address) error {
	var me *command.Error
	if errors.As(err, &me) {
		return me
	}
	var se *scriptError
	if !errors.As(err, &se) {
		return &command.Error{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, Msg: "running osascript failed", Err: err}
	}
	e := &command.Error{Err: se}
	switch se.Number {
	case errNoSuchObject:
		e.Code = linev1.ErrorCode_ERROR_CODE_NOT_FOUND
		if a.chatID != "" {
			e.Msg = fmt.Sprintf("Messages has no chat %s (-1728)", a.chatID)
		} else {
			e.Msg = fmt.Sprintf("Messages has no iMessage account or cannot reach participant %s (-1728)", a.handle)
		}
	case errCoercion:
		switch {
		case t.handle == "":
			e.Code = linev1.ErrorCode_ERROR_CODE_UNSUPPORTED
			e.Capability = kind
			e.Msg = fmt.Sprintf("Messages' AppleScript cannot address chat %s on this Mac (bad service type, -1700); the private-API helper can", t.chat)
		case a.handle != "" && kind == linev1.Capability_CAPABILITY_SEND_ATTACHMENT:
			e.Code = linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
			e.Msg = fmt.Sprintf("Messages would not take the file or the participant %s (-1700)", a.handle)
		default:
			e.Code = linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT
			e.Msg = fmt.Sprintf("Messages would not take %s as an iMessage participant (-1700)", a.handle)
		}
	case errNotAuthorized:
		e.Code = linev1.ErrorCode_ERROR_CODE_UNAVAILABLE
		e.Msg = "line-agent may not control Messages (-1743): grant Automation permission to line-agent for Messages in System Settings > Privacy & Security > Automation"
	case errNotRunning:
		e.Code = linev1.ErrorCode_ERROR_CODE_UNAVAILABLE
		e.Msg = "Messages is not running (-600), also after launching it and retrying once"
	case errGroupCreation:
		e.Code = linev1.ErrorCode_ERROR_CODE_UNSUPPORTED
		e.Capability = linev1.Capability_CAPABILITY_CREATE_CHAT
		e.Msg = "Messages refused to create a chat through AppleScript (-10000, broken since macOS 11); the private-API helper can"
	case 0:
		e.Code = linev1.ErrorCode_ERROR_CODE_INTERNAL
		e.Msg = fmt.Sprintf("osascript exited %d without an AppleScript error number: %s", se.ExitCode, se.Detail)
	default:
		e.Code = linev1.ErrorCode_ERROR_CODE_INTERNAL
		e.Msg = fmt.Sprintf("AppleScript error %d: %s", se.Number, se.Detail)
	}
	e.Err = nil // the message already says everything; keep Error() short
	if strings.TrimSpace(se.Detail) != "" && se.Number != 0 && e.Code != linev1.ErrorCode_ERROR_CODE_INTERNAL {
		e.Err = errors.New(se.Detail)
	}
	return e
}
