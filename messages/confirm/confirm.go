// Package confirm acknowledges commands truthfully: it waits until chat.db
// shows what a command did (the outgoing row sent, the tapback row, the
// edit, the retraction, the read marks, the chat and its name) before a
// driver may report success, and refuses before anything is sent what
// chat.db already says cannot work (an unknown chat, a missing target
// message, someone else's message, a message past Apple's edit and unsend
// window).
//
// A Confirmer is given to each driver that needs it (bridge.DriverOptions,
// applescript.Options): the driver calls Check before it sends and Confirm,
// with what Check saw, after. It only reads chat.db, through a read-only
// chatdb.Reader.
package confirm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/pkg/wallclock"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// DefaultWindow is how long after sending Apple allows an edit or an unsend
// (about 2 minutes; the facts sheet's figure).
const DefaultWindow = 2 * time.Minute

// Options configure New.
type Options struct {
	// Window bounds edits and unsends after the message's date. Default
	// DefaultWindow.
	Window time.Duration
	// Timeout bounds a confirmation whose context has no deadline.
	// Default 2 minutes.
	Timeout time.Duration
	// MaxPoll caps the growing pause between two looks at chat.db.
	// Default 50 ms.
	MaxPoll time.Duration
	// Now is the clock for the edit window. Default time.Now.
	Now func() time.Time
	// Logger; default discard.
	Logger *slog.Logger
}

// Confirmer reads chat.db for the evidence of each command.
type Confirmer struct {
	r    *chatdb.Reader
	opts Options
	log  *slog.Logger
}

// New returns a Confirmer over r, which must be read-only (chatdb.Open).
func New(r *chatdb.Reader, opts Options) *Confirmer {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.MaxPoll <= 0 {
		opts.MaxPoll = 50 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = wallclock.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Confirmer{r: r, opts: opts, log: opts.Logger}
}

// Before is what Check saw before the command ran: when it started, and the
// message it targets as it was. The driver passes it to Confirm. The zero
// Before (no Check ran) makes Confirm look back a minute for a send and
// take any edit as the command's.
type Before struct {
	start  time.Time
	target chatdb.MessageState
}

// sendsMessage reports whether cmd writes a message row: a send, or a new
// chat with a first message.
func sendsMessage(cmd *linev1.Command) bool {
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText, *linev1.Command_SendAttachment:
		return true
	case *linev1.Command_CreateChat:
		return k.CreateChat.GetFirstMessage() != ""
	}
	return false
}

func invalid(format string, args ...any) *command.Error {
	return command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, format, args...)
}

func notFound(format string, args ...any) *command.Error {
	return command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, format, args...)
}

// Check runs the pre-checks that need chat.db and returns what it saw, for
// Confirm. It sends nothing.
func (c *Confirmer) Check(ctx context.Context, cmd *linev1.Command) (Before, error) {
	p := Before{start: c.opts.Now()}
	if g := cmd.GetChatGuid(); g != "" && command.Kind(cmd) != linev1.Capability_CAPABILITY_LOOKUP_HANDLE {
		if _, err := c.r.LookupChat(ctx, g); errors.Is(err, chatdb.ErrNotFound) {
			return Before{}, notFound("no chat %s on this Mac", g)
		} else if err != nil {
			return Before{}, command.AsError(err)
		}
	}
	var guid string
	var part int32
	mine := false
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		guid, part = k.SendText.GetReplyTo().GetMessageGuid(), k.SendText.GetReplyTo().GetPart()
	case *linev1.Command_SendAttachment:
		guid, part = k.SendAttachment.GetReplyTo().GetMessageGuid(), k.SendAttachment.GetReplyTo().GetPart()
	case *linev1.Command_React:
		guid, part = k.React.GetMessageGuid(), k.React.GetPart()
	case *linev1.Command_Edit:
		guid, part, mine = k.Edit.GetMessageGuid(), k.Edit.GetPart(), true
	case *linev1.Command_Unsend:
		guid, part, mine = k.Unsend.GetMessageGuid(), k.Unsend.GetPart(), true
	}
	_ = part
	if guid != "" {
		st, err := c.r.LookupMessage(ctx, guid)
		if errors.Is(err, chatdb.ErrNotFound) {
			return Before{}, notFound("no message %s on this Mac", guid)
		}
		if err != nil {
			return Before{}, command.AsError(err)
		}
		if g := cmd.GetChatGuid(); g != "" && st.ChatGUID != "" && !command.SameChat(g, st.ChatGUID) {
			return Before{}, notFound("message %s is not in chat %s", guid, g)
		}
		if mine {
			what := command.KindName(cmd)
			switch {
			case !st.FromMe:
				return Before{}, invalid("cannot %s message %s: it was sent by someone else, only your own messages can be changed", what, guid)
			case !st.DateRetracted.IsZero():
				return Before{}, invalid("cannot %s message %s: it was unsent", what, guid)
			case c.opts.Now().Sub(st.Date) > c.opts.Window:
				return Before{}, invalid("cannot %s message %s: it was sent %s ago, and Apple allows it only within about %s of sending",
					what, guid, c.opts.Now().Sub(st.Date).Round(time.Second), c.opts.Window)
			}
		}
		p.target = st
	}
	return p, nil
}

// Confirm polls chat.db, with a short growing pause, until the evidence of
// cmd is there, and returns the snapshot it shows; DEADLINE_EXCEEDED with
// the last state seen when the context ends first. before is what Check
// saw; answered is what Messages (the helper) answered, for a send the new
// message's GUID.
func (c *Confirmer) Confirm(ctx context.Context, cmd *linev1.Command, before Before, answered *linev1.Snapshot, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if answered == nil {
		answered = &linev1.Snapshot{}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}
	p := before
	if p.start.IsZero() {
		p.start = c.opts.Now().Add(-time.Minute)
	}
	chat := answered.GetChatGuid()
	if chat == "" {
		chat = cmd.GetChatGuid()
	}
	if chat == "" && sendsMessage(cmd) {
		// No answer named it (the helper went away before answering):
		// the chat the message's row lands in, as reconciliation names it.
		chat, _ = sendChat(cmd)
	}
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		return c.sent(ctx, chat, answered.GetMessageGuid(), k.SendText.GetText(), p.start)
	case *linev1.Command_SendAttachment:
		return c.sent(ctx, chat, answered.GetMessageGuid(), "\uFFFC", p.start)
	case *linev1.Command_CreateChat:
		return c.createChat(ctx, k.CreateChat, chat, answered.GetMessageGuid(), p.start)
	case *linev1.Command_React:
		r := k.React
		code, err := effects.ReactionCode(r.GetTapback(), r.GetEmoji() != "", r.GetRemove())
		if err != nil {
			return nil, invalid("%v", err)
		}
		var last string
		return c.poll(ctx, func() (*linev1.Snapshot, string, error) {
			st, err := c.r.FindTapback(ctx, r.GetMessageGuid(), int(r.GetPart()), code)
			if err != nil {
				return nil, last, skipNotFound(err)
			}
			last = "tapback row visible"
			return snapshotOf(st), last, nil
		}, "no tapback row yet")
	case *linev1.Command_Edit:
		e := k.Edit
		want := strings.TrimSpace(e.GetText())
		return c.message(ctx, e.GetMessageGuid(), func(st chatdb.MessageState) (bool, string) {
			if !st.DateEdited.After(p.target.DateEdited) {
				return false, "not edited yet"
			}
			if strings.TrimSpace(st.Text) != want && e.GetPart() == 0 {
				return false, "edited, text not changed yet"
			}
			return true, "edited"
		})
	case *linev1.Command_Unsend:
		return c.message(ctx, k.Unsend.GetMessageGuid(), func(st chatdb.MessageState) (bool, string) {
			if st.DateRetracted.IsZero() {
				return false, "not retracted yet"
			}
			return true, "retracted"
		})
	case *linev1.Command_MarkRead:
		var last string
		return c.poll(ctx, func() (*linev1.Snapshot, string, error) {
			cs, err := c.r.LookupChat(ctx, chat)
			if err != nil {
				return nil, last, skipNotFound(err)
			}
			n, err := c.r.UnreadIncoming(ctx, chat)
			if err != nil {
				return nil, last, skipNotFound(err)
			}
			last = fmt.Sprintf("%d incoming messages unread", n)
			if n > 0 {
				return nil, last, nil
			}
			return chatSnapshot(cs, c.opts.Now()), "all read", nil
		}, "chat not visible")
	case *linev1.Command_RenameGroup:
		return c.named(ctx, chat, k.RenameGroup.GetName())
	case *linev1.Command_Typing, *linev1.Command_LookupHandle:
		return answered, nil
	}
	// Kinds without chat.db evidence the confirmer knows (backgrounds are a
	// later issue): the answer stands.
	return answered, nil
}

// sent waits for an outgoing row (by GUID, or found by text in the chat
// since the send started) to be sent or failed.
func (c *Confirmer) sent(ctx context.Context, chat, guid, text string, since time.Time) (*linev1.Snapshot, error) {
	last := "not written"
	return c.poll(ctx, func() (*linev1.Snapshot, string, error) {
		var st chatdb.MessageState
		var err error
		if guid != "" {
			st, err = c.r.LookupMessage(ctx, guid)
		} else {
			st, err = c.r.FindOutgoing(ctx, chat, text, chatdb.Window{Since: since})
		}
		if err != nil {
			return nil, last, skipNotFound(err)
		}
		guid = st.GUID
		snap, state, failed := sendOutcome(st)
		last = state
		if failed != nil {
			return nil, last, failed
		}
		return snap, last, nil
	}, last)
}

// sendOutcome judges an outgoing row: sent (the snapshot), failed (the
// error Messages recorded) or neither yet (both nil). Reconcile judges a
// row found after a crash the same way.
func sendOutcome(st chatdb.MessageState) (*linev1.Snapshot, string, *command.Error) {
	switch {
	case st.Error > 0:
		e := command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "Messages could not send the message (chat.db error %d)", st.Error)
		e.LastState = fmt.Sprintf("failed (error %d)", st.Error)
		return nil, e.LastState, e
	case st.Sent:
		return snapshotOf(st), "sent", nil
	}
	return nil, "written, not sent", nil
}

// createChat waits for the first message to be sent (by its GUID, or by
// its text in the answered chat), then for a group's name; without a first
// message (a helper with create-chat-empty) no message GUID is expected and
// the chat row itself, or the group's name, is the evidence.
func (c *Confirmer) createChat(ctx context.Context, cc *linev1.CreateChat, chat, guid string, since time.Time) (*linev1.Snapshot, error) {
	var snap *linev1.Snapshot
	if cc.GetFirstMessage() == "" {
		guid = "" // nothing was sent: no message to wait for
	}
	if guid != "" || (chat != "" && cc.GetFirstMessage() != "") {
		s, err := c.sent(ctx, chat, guid, cc.GetFirstMessage(), since)
		if err != nil {
			return nil, err
		}
		snap, chat = s, s.GetChatGuid()
	}
	if chat == "" {
		if cc.GetFirstMessage() == "" {
			return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "the helper created the chat without a first message but did not name it")
		}
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "the helper named neither the chat nor its first message")
	}
	if cc.GetName() != "" && len(cc.GetParticipants()) > 1 {
		named, err := c.named(ctx, chat, cc.GetName())
		if err != nil {
			return nil, err
		}
		if snap == nil {
			snap = named
		}
		return snap, nil
	}
	if snap != nil {
		return snap, nil
	}
	var last string
	return c.poll(ctx, func() (*linev1.Snapshot, string, error) {
		cs, err := c.r.LookupChat(ctx, chat)
		if err != nil {
			return nil, last, skipNotFound(err)
		}
		return chatSnapshot(cs, c.opts.Now()), "chat exists", nil
	}, "chat not visible")
}

// named waits for the chat's display_name to be name.
func (c *Confirmer) named(ctx context.Context, chat, name string) (*linev1.Snapshot, error) {
	last := "chat not visible"
	return c.poll(ctx, func() (*linev1.Snapshot, string, error) {
		cs, err := c.r.LookupChat(ctx, chat)
		if err != nil {
			return nil, last, skipNotFound(err)
		}
		if cs.DisplayName != name {
			last = fmt.Sprintf("named %q", cs.DisplayName)
			return nil, last, nil
		}
		return chatSnapshot(cs, c.opts.Now()), "named", nil
	}, last)
}

// message waits until ok accepts the state of the message guid.
func (c *Confirmer) message(ctx context.Context, guid string, ok func(chatdb.MessageState) (bool, string)) (*linev1.Snapshot, error) {
	last := "not visible"
	return c.poll(ctx, func() (*linev1.Snapshot, string, error) {
		st, err := c.r.LookupMessage(ctx, guid)
		if err != nil {
			return nil, last, skipNotFound(err)
		}
		done, state := ok(st)
		last = state
		if !done {
			return nil, last, nil
		}
		return snapshotOf(st), last, nil
	}, last)
}

// skipNotFound keeps polling through "not there yet".
func skipNotFound(err error) error {
	if errors.Is(err, chatdb.ErrNotFound) {
		return nil
	}
	return err
}

// poll calls look until it returns a snapshot or an error, pausing 1, 2,
// 4... ms up to MaxPoll in between (a commit can become visible a few
// milliseconds after its file event), and fails with DEADLINE_EXCEEDED
// and the last state when ctx ends.
func (c *Confirmer) poll(ctx context.Context, look func() (*linev1.Snapshot, string, error), initial string) (*linev1.Snapshot, error) {
	last := initial
	delay := time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		snap, state, err := look()
		if state != "" {
			last = state
		}
		if err != nil {
			if ctx.Err() == nil {
				return nil, command.AsError(err)
			}
		} else if snap != nil {
			return snap, nil
		}
		t.Reset(delay)
		select {
		case <-ctx.Done():
			e := command.AsError(ctx.Err())
			if e.Code == linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED {
				e.Msg = "chat.db did not show the result in time: " + last
			}
			e.LastState = last
			return nil, e
		case <-t.C:
		}
		delay = min(delay*2, c.opts.MaxPoll)
	}
}

func snapshotOf(st chatdb.MessageState) *linev1.Snapshot {
	s := &linev1.Snapshot{MessageGuid: st.GUID, ChatGuid: st.ChatGUID, Sent: st.Sent, Delivered: st.Delivered, Service: st.Service}
	if !st.Date.IsZero() {
		s.Date = timestamppb.New(st.Date)
	}
	return s
}

func chatSnapshot(cs chatdb.ChatState, now time.Time) *linev1.Snapshot {
	return &linev1.Snapshot{ChatGuid: cs.GUID, Service: cs.Service, Date: timestamppb.New(now)}
}
