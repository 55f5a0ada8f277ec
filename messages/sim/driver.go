package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Fault is a failure the simulated Messages injects into sends, so the agent's
// handling of Messages misbehaving can be tested without a Mac.
type Fault struct {
	// FailCode, when > 0, makes every send fail: the row is written, then
	// marked with message.error = FailCode, as Messages does when iMessage
	// rejects it.
	FailCode int
	// Hang makes every send hang like a stuck osascript: the row stays
	// unsent and Execute returns only when the command's deadline passes.
	Hang bool
}

// DriverOptions configure the simulated driver.
type DriverOptions struct {
	// Latency is how long "Apple's servers" take to mark an outgoing row
	// sent, and then again to mark it delivered (default 5ms).
	Latency time.Duration
	// Fault is the initial fault injection (none by default); SetFault
	// changes it while running.
	Fault Fault
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Driver is messages.Driver for the simulated Messages. It writes rows with
// the Store as Messages would and acknowledges a command only once the
// result is visible through a separate read-only connection (a chatdb
// Reader), which is the truthful-ack promise the real drivers keep.
type Driver struct {
	store  *Store
	reader *chatdb.Reader
	opts   DriverOptions
	log    *slog.Logger

	mu     sync.Mutex
	fault  Fault
	onSent func(Delivery) // the remote people's inbox; nil means nobody answers
}

// Delivery is an outgoing message as it reaches the people in a chat.
type Delivery struct {
	ChatGUID    string
	MessageGUID string
	Text        string
	// To are the chat's participants.
	To    []string
	Group bool
}

// NewDriver returns a driver writing with store and verifying through
// reader, which must be a separate read-only Reader of the same chat.db.
func NewDriver(store *Store, reader *chatdb.Reader, opts DriverOptions) *Driver {
	if opts.Latency <= 0 {
		opts.Latency = 5 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Driver{store: store, reader: reader, opts: opts, log: opts.Logger, fault: opts.Fault}
}

// SetFault changes the injected fault for the following commands.
func (d *Driver) SetFault(f Fault) {
	d.mu.Lock()
	d.fault = f
	d.mu.Unlock()
}

// OnSent registers the function told about every successful send (the
// remote people). It must not block.
func (d *Driver) OnSent(f func(Delivery)) {
	d.mu.Lock()
	d.onSent = f
	d.mu.Unlock()
}

var capabilities = []linev1.Capability{
	linev1.Capability_CAPABILITY_SEND_TEXT,
	linev1.Capability_CAPABILITY_TYPING,
	linev1.Capability_CAPABILITY_REACT,
	linev1.Capability_CAPABILITY_EDIT,
	linev1.Capability_CAPABILITY_UNSEND,
	linev1.Capability_CAPABILITY_MARK_READ,
	linev1.Capability_CAPABILITY_CREATE_CHAT,
	linev1.Capability_CAPABILITY_EFFECT,
	linev1.Capability_CAPABILITY_REPLY,
	linev1.Capability_CAPABILITY_SUBJECT,
}

// Capabilities lists exactly the command kinds and features Execute
// implements.
func (d *Driver) Capabilities() []linev1.Capability {
	return append([]linev1.Capability(nil), capabilities...)
}

// Execute runs cmd against the simulated Messages. See messages.Driver.
func (d *Driver) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if cmd == nil {
		return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "no command")
	}
	if cmd.GetLine() != "" && cmd.GetLine() != d.store.Line() {
		return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_MISROUTED, "line %s is not served here (this Mac sends as %s)", cmd.GetLine(), d.store.Line())
	}
	if report == nil {
		report = func(*linev1.CommandUpdate) {}
	}
	progress := func(stage string) {
		report(&linev1.CommandUpdate{CommandId: cmd.GetId(), State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS, Progress: &linev1.Progress{Stage: stage}})
	}
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		chat, err := d.resolveChat(ctx, cmd)
		if err != nil {
			return nil, err
		}
		return d.sendText(ctx, chat, k.SendText, progress)
	case *linev1.Command_CreateChat:
		return d.createChat(ctx, k.CreateChat, progress)
	case *linev1.Command_MarkRead:
		chat, err := d.resolveChat(ctx, cmd)
		if err != nil {
			return nil, err
		}
		if _, err := d.store.MarkChatRead(ctx, chat.GUID); err != nil {
			return nil, messages.AsError(err)
		}
		return &linev1.Snapshot{ChatGuid: chat.GUID, Date: timestamppb.New(d.store.Now())}, nil
	case *linev1.Command_Typing:
		chat, err := d.resolveChat(ctx, cmd)
		if err != nil {
			return nil, err
		}
		return &linev1.Snapshot{ChatGuid: chat.GUID, Date: timestamppb.New(d.store.Now())}, nil
	case *linev1.Command_React:
		return d.react(ctx, k.React)
	case *linev1.Command_Edit:
		return d.edit(ctx, k.Edit)
	case *linev1.Command_Unsend:
		return d.unsend(ctx, k.Unsend)
	}
	c := messages.Kind(cmd)
	if c == linev1.Capability_CAPABILITY_UNSPECIFIED {
		return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the command has no kind")
	}
	return nil, messages.Unsupported(c, "the simulated Messages does not implement it")
}

var (
	phoneRE = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
	emailRE = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s]+$`)
)

func validHandle(h string) bool { return phoneRE.MatchString(h) || emailRE.MatchString(h) }

// resolveChat finds the command's chat: by GUID (any service spelling), or
// the one-to-one chat (found or created) for a single participant, or the
// group with exactly those participants.
func (d *Driver) resolveChat(ctx context.Context, cmd *linev1.Command) (Chat, error) {
	switch t := cmd.GetTarget().(type) {
	case *linev1.Command_ChatGuid:
		return d.chatByGUID(ctx, t.ChatGuid)
	case *linev1.Command_Participants:
		return d.chatFor(ctx, t.Participants.GetHandles(), "")
	}
	return Chat{}, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the command names no chat: give chat_guid or participants")
}

func (d *Driver) chatByGUID(ctx context.Context, guid string) (Chat, error) {
	if c, err := d.store.Chat(ctx, guid); err == nil {
		return c, nil
	} else if !errors.Is(err, ErrNoChat) {
		return Chat{}, messages.AsError(err)
	}
	if _, rest, ok := strings.Cut(guid, ";"); ok {
		for _, svc := range []string{"iMessage", "SMS", "RCS", "any"} {
			if c, err := d.store.Chat(ctx, svc+";"+rest); err == nil {
				return c, nil
			}
		}
	}
	return Chat{}, messages.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "no chat %s", guid)
}

func (d *Driver) chatFor(ctx context.Context, handles []string, name string) (Chat, error) {
	if len(handles) == 0 {
		return Chat{}, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "no participants")
	}
	for _, h := range handles {
		if !validHandle(h) {
			return Chat{}, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "%q is neither an E.164 phone number nor an email address", h)
		}
		if chatdb.CanonicalHandle(h) == chatdb.CanonicalHandle(d.store.Line()) {
			return Chat{}, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "%s is this Mac's own line", h)
		}
	}
	c, err := d.store.EnsureChat(ctx, ChatSpec{Participants: handles, Group: len(handles) > 1, DisplayName: name})
	if err != nil {
		return Chat{}, messages.AsError(err)
	}
	return c, nil
}

// pause waits for d or the command's end.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// timeout is the error for a command whose deadline passed, with the last
// state chat.db showed.
func timeout(ctx context.Context, last string) *messages.Error {
	e := messages.AsError(ctx.Err())
	e.LastState = last
	return e
}

func describe(st chatdb.MessageState) string {
	switch {
	case st.GUID == "":
		return "not written"
	case st.Error > 0:
		return fmt.Sprintf("failed (error %d)", st.Error)
	case st.Delivered:
		return "delivered"
	case st.Sent:
		return "sent"
	}
	return "written, not sent"
}

// waitVisible polls the read-only Reader until ok accepts the row's state:
// the acknowledgement comes from what any other reader of chat.db sees, not
// from what the writer believes it wrote.
func (d *Driver) waitVisible(ctx context.Context, guid string, ok func(chatdb.MessageState) bool) (chatdb.MessageState, error) {
	var last chatdb.MessageState
	delay := time.Millisecond
	for {
		st, err := d.reader.LookupMessage(ctx, guid)
		if err == nil {
			last = st
			if ok(st) {
				return st, nil
			}
		} else if !errors.Is(err, chatdb.ErrNotFound) && ctx.Err() == nil {
			return last, messages.AsError(err)
		}
		if err := pause(ctx, delay); err != nil {
			return last, timeout(ctx, describe(last))
		}
		delay = min(delay*2, 20*time.Millisecond)
	}
}

func snapshotOf(st chatdb.MessageState) *linev1.Snapshot {
	return &linev1.Snapshot{
		MessageGuid: st.GUID, ChatGuid: st.ChatGUID, Sent: st.Sent, Delivered: st.Delivered,
		Date: timestamppb.New(st.Date), Service: st.Service,
	}
}

func (d *Driver) sendText(ctx context.Context, chat Chat, st *linev1.SendText, progress func(string)) (*linev1.Snapshot, error) {
	if strings.TrimSpace(st.GetText()) == "" {
		return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "empty text")
	}
	m := Msg{Chat: chat.GUID, FromMe: true, Text: st.GetText(), Subject: st.GetSubject()}
	if st.GetEffect() != "" {
		e, err := effects.Lookup(st.GetEffect())
		if err != nil {
			return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "%w", err)
		}
		m.Effect = e.ID
	}
	if rt := st.GetReplyTo(); rt != nil && rt.GetMessageGuid() != "" {
		if _, err := d.reader.LookupMessage(ctx, rt.GetMessageGuid()); err != nil {
			return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "reply_to: no message %s", rt.GetMessageGuid())
		}
		m.ReplyTo, m.ReplyToPart = rt.GetMessageGuid(), int(rt.GetPart())
	}
	return d.send(ctx, chat, m, progress)
}

// send writes an outgoing row and plays Apple's servers: after Latency the
// row is marked sent, after another Latency delivered, each in its own
// transaction, unless a fault says otherwise.
func (d *Driver) send(ctx context.Context, chat Chat, m Msg, progress func(string)) (*linev1.Snapshot, error) {
	d.mu.Lock()
	fault, onSent := d.fault, d.onSent
	d.mu.Unlock()

	row, err := d.store.Insert(ctx, m)
	if err != nil {
		return nil, messages.AsError(err)
	}
	progress("written")
	switch {
	case fault.Hang:
		st, _ := d.reader.LookupMessage(context.WithoutCancel(ctx), row.GUID)
		<-ctx.Done()
		return nil, timeout(ctx, describe(st))
	case fault.FailCode > 0:
		if err := pause(ctx, d.opts.Latency); err != nil {
			return nil, timeout(ctx, "written, not sent")
		}
		if err := d.store.SetError(context.WithoutCancel(ctx), row.GUID, fault.FailCode); err != nil {
			return nil, messages.AsError(err)
		}
		st, err := d.waitVisible(ctx, row.GUID, func(s chatdb.MessageState) bool { return s.Error > 0 })
		if err != nil {
			return nil, err
		}
		e := messages.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "Messages could not send the message (chat.db error %d)", st.Error)
		e.LastState = describe(st)
		return nil, e
	}
	// Once the row exists the send is underway: finish it even if the
	// caller gives up, as Messages would.
	bg := context.WithoutCancel(ctx)
	if err := pause(ctx, d.opts.Latency); err != nil {
		return nil, timeout(ctx, "written, not sent")
	}
	if err := d.store.MarkSent(bg, row.GUID); err != nil {
		return nil, messages.AsError(err)
	}
	progress("sent")
	if err := pause(ctx, d.opts.Latency); err == nil {
		if err := d.store.MarkDelivered(bg, row.GUID); err != nil {
			return nil, messages.AsError(err)
		}
	}
	st, err := d.waitVisible(ctx, row.GUID, func(s chatdb.MessageState) bool { return s.Sent && s.Delivered })
	if err != nil {
		return nil, err
	}
	if onSent != nil {
		onSent(Delivery{ChatGUID: chat.GUID, MessageGUID: row.GUID, Text: m.Text, To: chat.Participants, Group: chat.IsGroup()})
	}
	return snapshotOf(st), nil
}

func (d *Driver) createChat(ctx context.Context, cc *linev1.CreateChat, progress func(string)) (*linev1.Snapshot, error) {
	chat, err := d.chatFor(ctx, cc.GetParticipants(), cc.GetName())
	if err != nil {
		return nil, err
	}
	if cc.GetFirstMessage() == "" {
		return &linev1.Snapshot{ChatGuid: chat.GUID, Service: chat.Service, Date: timestamppb.New(d.store.Now())}, nil
	}
	return d.send(ctx, chat, Msg{Chat: chat.GUID, FromMe: true, Text: cc.GetFirstMessage()}, progress)
}

// target looks a message up for react, edit and unsend.
func (d *Driver) target(ctx context.Context, guid string, mine bool) (chatdb.MessageState, error) {
	if guid == "" {
		return chatdb.MessageState{}, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "no message_guid")
	}
	st, err := d.reader.LookupMessage(ctx, guid)
	if errors.Is(err, chatdb.ErrNotFound) {
		return st, messages.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "no message %s", guid)
	}
	if err != nil {
		return st, messages.AsError(err)
	}
	if mine && !st.FromMe {
		return st, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "message %s was not sent by this account: only your own messages can be changed", guid)
	}
	if mine && !st.DateRetracted.IsZero() {
		return st, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "message %s was unsent", guid)
	}
	return st, nil
}

func (d *Driver) react(ctx context.Context, r *linev1.React) (*linev1.Snapshot, error) {
	st, err := d.target(ctx, r.GetMessageGuid(), false)
	if err != nil {
		return nil, err
	}
	tb := &Tapback{Target: st.GUID, Part: int(r.GetPart())}
	switch x := r.GetReaction().(type) {
	case *linev1.React_Tapback:
		t, err := effects.LookupTapback(x.Tapback)
		if err != nil {
			return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "%w", err)
		}
		tb.Code = t.Code
	case *linev1.React_Emoji:
		if x.Emoji == "" {
			return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "empty emoji")
		}
		tb.Code, tb.Emoji = effects.CodeEmoji, x.Emoji
	default:
		return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "react needs a tapback or an emoji")
	}
	if r.GetRemove() {
		tb.Code += effects.RemoveOffset
	}
	row, err := d.store.Insert(ctx, Msg{Chat: st.ChatGUID, FromMe: true, Tapback: tb})
	if err != nil {
		return nil, messages.AsError(err)
	}
	got, err := d.waitVisible(ctx, row.GUID, func(chatdb.MessageState) bool { return true })
	if err != nil {
		return nil, err
	}
	return snapshotOf(got), nil
}

func (d *Driver) edit(ctx context.Context, e *linev1.Edit) (*linev1.Snapshot, error) {
	if strings.TrimSpace(e.GetText()) == "" {
		return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "empty text")
	}
	st, err := d.target(ctx, e.GetMessageGuid(), true)
	if err != nil {
		return nil, err
	}
	if err := d.store.Edit(ctx, st.GUID, int(e.GetPart()), e.GetText()); err != nil {
		return nil, messages.AsError(err)
	}
	got, err := d.waitVisible(ctx, st.GUID, func(s chatdb.MessageState) bool { return s.DateEdited.After(st.DateEdited) })
	if err != nil {
		return nil, err
	}
	return snapshotOf(got), nil
}

func (d *Driver) unsend(ctx context.Context, u *linev1.Unsend) (*linev1.Snapshot, error) {
	st, err := d.target(ctx, u.GetMessageGuid(), true)
	if err != nil {
		return nil, err
	}
	if err := d.store.Unsend(ctx, st.GUID, int(u.GetPart())); err != nil {
		return nil, messages.AsError(err)
	}
	got, err := d.waitVisible(ctx, st.GUID, func(s chatdb.MessageState) bool { return !s.DateRetracted.IsZero() })
	if err != nil {
		return nil, err
	}
	return snapshotOf(got), nil
}
