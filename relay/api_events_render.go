package relay

import (
	"errors"
	"fmt"
	"math"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// The renderer: one stored agent event (line.v1.Event) as the platform
// API's change event. The SDK cannot get past an event it cannot read: it
// fails the stream, and every reconnect replays the same event through
// catch-up and fails again. So renderEvent either returns an event with
// every field the SDK requires (wholeEvent checks them, whatever built the
// event) or an error, and the caller logs the event and skips it.

// platformEvent is one agent event as the platform API shows it: exactly
// one of message, group and chat is set.
type platformEvent struct {
	message *imessagev1.MessageChangeEvent
	group   *imessagev1.GroupChangeEvent
	chat    *imessagev1.ChatChangeEvent
}

// errNoPlatformEvent is renderEvent's answer for an agent event the
// platform API has no event for (delivery, sent and failure marks, typing,
// history synced from iCloud): skipped quietly. Any other error is an event
// that cannot be rendered whole.
var errNoPlatformEvent = errors.New("no platform API event for this kind")

// originFunc returns the message event the agent reported for a message
// guid, nil when none is stored: edits and unsends say whose message
// changed only through it.
type originFunc func(guid string) *linev1.MessageEvent

// renderEvent renders ev, received by the relay at receivedAt (the event's
// time when the agent gave none). origin may be nil.
func renderEvent(ev *linev1.Event, receivedAt time.Time, origin originFunc) (platformEvent, error) {
	if ev.GetHistorical() {
		// Rows synced from iCloud with old dates: the SDK would take each
		// for a new inbound message and the app would answer history.
		return platformEvent{}, errNoPlatformEvent
	}
	switch ev.GetPayload().(type) {
	case *linev1.Event_Delivered, *linev1.Event_Sent, *linev1.Event_SendFailed, *linev1.Event_Typing,
		*linev1.Event_AttachmentTransferred, *linev1.Event_MessagesRestarted:
		return platformEvent{}, errNoPlatformEvent
	case nil:
		return platformEvent{}, errors.New("the event has no payload")
	}
	g, perr := command.ParseChatGUID(ev.GetChatGuid())
	if perr != nil {
		return platformEvent{}, fmt.Errorf("chat_guid: %s", perr.Msg)
	}
	r := &eventRender{
		ev:     ev,
		chat:   g,
		guid:   command.PlatformChatGUID(ev.GetChatGuid()),
		at:     ev.GetDate(),
		line:   lineKey(ev.GetLine()),
		svc:    chatServiceType(g.Service),
		origin: origin,
	}
	if r.at == nil || r.at.CheckValid() != nil {
		r.at = timestamppb.New(receivedAt)
	}
	pe, err := r.render()
	if err != nil {
		return platformEvent{}, err
	}
	return pe, wholeEvent(pe)
}

// eventRender is one renderEvent call: the event and what every change needs.
type eventRender struct {
	ev     *linev1.Event
	chat   command.ChatGUID
	guid   string // the platform spelling of the chat GUID
	at     *timestamppb.Timestamp
	line   string // the line's key, "" when the agent did not say
	svc    imessagev1.ChatServiceType
	origin originFunc
}

func (r *eventRender) render() (platformEvent, error) {
	switch p := r.ev.GetPayload().(type) {
	case *linev1.Event_Message:
		return r.received(p.Message)
	case *linev1.Event_Tapback:
		return r.tapback(p.Tapback)
	case *linev1.Event_Edited:
		guid, err := r.messageGUID()
		if err != nil {
			return platformEvent{}, err
		}
		e := r.byAuthor(guid)
		e.Change = &imessagev1.MessageChangeEvent_MessageEdited{MessageEdited: &imessagev1.MessageEdited{
			MessageGuid: guid, Content: &imessagev1.MessageContent{Text: proto.String(p.Edited.GetText())}, EditedAt: r.at,
		}}
		return platformEvent{message: e}, nil
	case *linev1.Event_Unsent:
		guid, err := r.messageGUID()
		if err != nil {
			return platformEvent{}, err
		}
		e := r.byAuthor(guid)
		e.Change = &imessagev1.MessageChangeEvent_MessageUnsent{MessageUnsent: &imessagev1.MessageUnsent{MessageGuid: guid, RetractedAt: r.at}}
		return platformEvent{message: e}, nil
	case *linev1.Event_Read:
		return r.read(p.Read)
	case *linev1.Event_Group:
		return r.group(p.Group)
	}
	return platformEvent{}, errNoPlatformEvent
}

func (r *eventRender) messageGUID() (string, error) {
	if g := r.ev.GetMessageGuid(); g != "" {
		return g, nil
	}
	return "", errors.New("the event names no message (message_guid is empty)")
}

// platformAddress is a handle as the platform API spells people: NormalizeLine's
// one spelling everywhere, so the SDK's verbatim compares hold. Nil for no
// handle.
func platformAddress(handle string, svc imessagev1.ChatServiceType) *imessagev1.SingleServiceAddressInfo {
	h := command.NormalizeLine(handle)
	if h == "" {
		return nil
	}
	return &imessagev1.SingleServiceAddressInfo{Address: h, Service: svc}
}

// byAuthor starts the event of a change to an existing message (an edit,
// an unsend): who made it and whether it was the line come from the
// message itself, while its event is still stored (Messages lets only a
// message's sender change it).
func (r *eventRender) byAuthor(guid string) *imessagev1.MessageChangeEvent {
	e := &imessagev1.MessageChangeEvent{ChatGuid: r.guid, OccurredAt: r.at}
	if r.origin == nil {
		return e
	}
	if m := r.origin(guid); m != nil {
		sender := m.GetSender()
		if m.GetFromMe() && sender == "" {
			sender = r.line
		}
		e.Actor, e.IsFromMe = platformAddress(sender, r.serviceOf(m.GetService())), m.GetFromMe()
	}
	return e
}

// serviceOf is a message's service, else the chat's.
func (r *eventRender) serviceOf(s string) imessagev1.ChatServiceType {
	if t := chatServiceType(s); t != imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_UNSPECIFIED {
		return t
	}
	return r.svc
}

// received renders a message: message_received, is_from_me set for the
// line's own (the SDK swallows those, so our sends echoed back produce
// nothing in the app).
func (r *eventRender) received(m *linev1.MessageEvent) (platformEvent, error) {
	guid, err := r.messageGUID()
	if err != nil {
		return platformEvent{}, err
	}
	svc := r.serviceOf(m.GetService())
	sender := m.GetSender()
	if m.GetFromMe() && sender == "" {
		sender = r.line
	}
	content := &imessagev1.MessageContent{Text: proto.String(m.GetText())}
	if eff := m.GetEffect(); eff != "" {
		// The agent names known effects ("slam"); the API carries
		// Apple's identifier, as a send's effect_id does.
		id := eff
		if e, err := effects.Lookup(eff); err == nil {
			id = e.ID
		}
		content.ExpressiveSendStyleId = &id
	}
	for _, a := range m.GetAttachments() {
		if a.GetGuid() == "" {
			continue // nothing the app could download or refer to
		}
		name := a.GetFileName()
		if name == "" && a.GetPath() != "" {
			name = path.Base(a.GetPath()) // the name only: a Mac's paths stay on the Mac
		}
		content.Attachments = append(content.Attachments, &imessagev1.AttachmentInfo{
			Guid:          a.GetGuid(),
			FileName:      name,
			MimeType:      a.GetMimeType(),
			TotalBytes:    int64(min(a.GetSize(), math.MaxInt64)),
			IsOutgoing:    m.GetFromMe(),
			TransferState: imessagev1.TransferState(a.GetTransferState()),
			IsSticker:     a.GetSticker(),
		})
	}
	for _, run := range m.GetRuns() {
		if run.GetMention() != "" {
			content.Mentions = append(content.Mentions, &imessagev1.MessageMention{
				Address: command.NormalizeLine(run.GetMention()), Start: run.GetStart(), Length: run.GetLength(),
			})
		}
	}
	msg := &imessagev1.Message{
		Guid:        guid,
		Content:     content,
		DateCreated: r.at,
		Sender:      platformAddress(sender, svc),
		IsFromMe:    m.GetFromMe(),
		ItemType:    imessagev1.MessageItemType_MESSAGE_ITEM_TYPE_NORMAL,
		ChatGuids:   []string{r.guid},
	}
	if s := m.GetSubject(); s != "" {
		msg.Subject = &s
	}
	if t := m.GetReplyTo().GetMessageGuid(); t != "" {
		msg.ReplyTargetGuid, msg.ThreadOriginatorGuid = proto.String(t), proto.String(t)
	}
	if r.line != "" {
		msg.DestinationCallerId = proto.String(r.line)
	}
	return platformEvent{message: &imessagev1.MessageChangeEvent{
		ChatGuid:   r.guid,
		OccurredAt: r.at,
		Actor:      msg.Sender,
		IsFromMe:   m.GetFromMe(),
		Change:     &imessagev1.MessageChangeEvent_MessageReceived{MessageReceived: &imessagev1.MessageReceived{Message: msg}},
	}}, nil
}

// tapbackKinds are the classic tapbacks by the agent's names.
var tapbackKinds = map[string]imessagev1.MessageReactionKind{
	"love":      imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LOVE,
	"like":      imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LIKE,
	"dislike":   imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_DISLIKE,
	"laugh":     imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LAUGH,
	"emphasize": imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_EMPHASIZE,
	"question":  imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_QUESTION,
	"sticker":   imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_STICKER,
}

// tapbackStickerPlaced is the agent's tapback name for a sticker dropped
// onto a bubble (effects.Associated).
const tapbackStickerPlaced = "sticker_placed"

// tapback renders a reaction added or removed, or a sticker placed. The
// SDK needs the reactor in actor.address.
func (r *eventRender) tapback(tb *linev1.TapbackEvent) (platformEvent, error) {
	target := tb.GetTargetMessageGuid()
	if target == "" {
		return platformEvent{}, errors.New("a tapback names no target message")
	}
	sender := tb.GetSender()
	if tb.GetFromMe() && sender == "" {
		sender = r.line
	}
	e := &imessagev1.MessageChangeEvent{ChatGuid: r.guid, OccurredAt: r.at, Actor: platformAddress(sender, r.svc), IsFromMe: tb.GetFromMe()}
	var part *int32
	if p := tb.GetPart(); p > 0 {
		part = proto.Int32(p)
	}
	if tb.GetTapback() == tapbackStickerPlaced {
		if tb.GetRemoved() {
			return platformEvent{}, errNoPlatformEvent // Messages records no such row; the API has no event for it
		}
		e.Change = &imessagev1.MessageChangeEvent_StickerPlaced{StickerPlaced: &imessagev1.StickerPlaced{MessageGuid: target, TargetPartIndex: part}}
		return platformEvent{message: e}, nil
	}
	reaction := &imessagev1.MessageReaction{}
	if tb.GetTapback() == "emoji" {
		reaction.Kind = imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_EMOJI
		if em := tb.GetEmoji(); em != "" {
			reaction.Emoji = proto.String(em)
		} else if !tb.GetRemoved() {
			return platformEvent{}, errors.New("an emoji tapback without its emoji")
		}
	} else if k, ok := tapbackKinds[tb.GetTapback()]; ok {
		reaction.Kind = k
	} else {
		return platformEvent{}, fmt.Errorf("unknown tapback %q", tb.GetTapback())
	}
	if tb.GetRemoved() {
		e.Change = &imessagev1.MessageChangeEvent_ReactionRemoved{ReactionRemoved: &imessagev1.MessageReactionRemoved{
			MessageGuid: target, TargetPartIndex: part, Reaction: reaction,
		}}
	} else {
		e.Change = &imessagev1.MessageChangeEvent_ReactionAdded{ReactionAdded: &imessagev1.MessageReactionAdded{
			MessageGuid: target, TargetPartIndex: part, Reaction: reaction,
		}}
	}
	return platformEvent{message: e}, nil
}

// read renders a read receipt. The agent's from_me says whose message was
// read: ours, by the other side (in a direct chat, the peer), or theirs, by
// the line on one of its devices (is_from_me; the SDK shows only the first).
func (r *eventRender) read(rd *linev1.ReadEvent) (platformEvent, error) {
	guid, err := r.messageGUID()
	if err != nil {
		return platformEvent{}, err
	}
	e := &imessagev1.MessageChangeEvent{ChatGuid: r.guid, OccurredAt: r.at,
		Change: &imessagev1.MessageChangeEvent_MessageRead{MessageRead: &imessagev1.MessageRead{MessageGuid: guid, ReadAt: r.at}}}
	switch {
	case !rd.GetFromMe():
		e.IsFromMe, e.Actor = true, platformAddress(r.line, r.svc)
	case !r.chat.Group:
		e.Actor = platformAddress(r.chat.ID, r.svc)
	}
	return platformEvent{message: e}, nil
}

// group renders a group change; backgrounds are chat changes.
func (r *eventRender) group(gr *linev1.GroupEvent) (platformEvent, error) {
	actor := gr.GetActor()
	fromMe := r.line != "" && lineKey(actor) == r.line
	switch gr.GetAction() {
	case linev1.GroupAction_GROUP_ACTION_BACKGROUND_SET, linev1.GroupAction_GROUP_ACTION_BACKGROUND_REMOVED:
		c := &imessagev1.ChatChangeEvent{ChatGuid: r.guid, OccurredAt: r.at, Actor: platformAddress(actor, r.svc), IsFromMe: fromMe}
		if gr.GetAction() == linev1.GroupAction_GROUP_ACTION_BACKGROUND_SET {
			c.Change = &imessagev1.ChatChangeEvent_BackgroundChanged{BackgroundChanged: &imessagev1.ChatBackgroundChanged{}}
		} else {
			c.Change = &imessagev1.ChatChangeEvent_BackgroundRemoved{BackgroundRemoved: &imessagev1.ChatBackgroundRemoved{}}
		}
		return platformEvent{chat: c}, nil
	}
	if !r.chat.Group {
		return platformEvent{}, fmt.Errorf("a group change (%s) in a chat that is not a group", gr.GetAction())
	}
	e := &imessagev1.GroupChangeEvent{ChatGuid: r.guid, OccurredAt: r.at, Actor: platformAddress(actor, r.svc), IsFromMe: fromMe}
	who := func() (*imessagev1.SingleServiceAddressInfo, error) {
		h := gr.GetHandle()
		if h == "" && gr.GetAction() == linev1.GroupAction_GROUP_ACTION_PARTICIPANT_LEFT {
			h = actor // who left is who acted
		}
		if a := platformAddress(h, r.svc); a != nil {
			return a, nil
		}
		return nil, fmt.Errorf("a group change (%s) names no participant", gr.GetAction())
	}
	switch gr.GetAction() {
	case linev1.GroupAction_GROUP_ACTION_RENAMED:
		e.Change = &imessagev1.GroupChangeEvent_DisplayNameChanged{DisplayNameChanged: &imessagev1.GroupDisplayNameChanged{DisplayName: gr.GetName()}}
	case linev1.GroupAction_GROUP_ACTION_PARTICIPANT_ADDED:
		p, err := who()
		if err != nil {
			return platformEvent{}, err
		}
		e.Change = &imessagev1.GroupChangeEvent_ParticipantAdded{ParticipantAdded: &imessagev1.GroupParticipantAdded{Participant: p}}
	case linev1.GroupAction_GROUP_ACTION_PARTICIPANT_REMOVED:
		p, err := who()
		if err != nil {
			return platformEvent{}, err
		}
		e.Change = &imessagev1.GroupChangeEvent_ParticipantRemoved{ParticipantRemoved: &imessagev1.GroupParticipantRemoved{Participant: p}}
	case linev1.GroupAction_GROUP_ACTION_PARTICIPANT_LEFT:
		p, err := who()
		if err != nil {
			return platformEvent{}, err
		}
		e.Change = &imessagev1.GroupChangeEvent_ParticipantLeft{ParticipantLeft: &imessagev1.GroupParticipantLeft{Participant: p}}
	case linev1.GroupAction_GROUP_ACTION_ICON_SET:
		e.Change = &imessagev1.GroupChangeEvent_IconChanged{IconChanged: &imessagev1.GroupIconChanged{}}
	case linev1.GroupAction_GROUP_ACTION_ICON_REMOVED:
		e.Change = &imessagev1.GroupChangeEvent_IconRemoved{IconRemoved: &imessagev1.GroupIconRemoved{}}
	default:
		return platformEvent{}, fmt.Errorf("unknown group action %s", gr.GetAction())
	}
	return platformEvent{group: e}, nil
}

// wholeEvent checks what the SDK requires of an event (the facts of
// docs/platform-api.md "Events"), so no event short of it is ever sent,
// whatever bug built it.
func wholeEvent(pe platformEvent) error {
	n := 0
	for _, set := range []bool{pe.message != nil, pe.group != nil, pe.chat != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("internal: %d platform events for one agent event", n)
	}
	var guid string
	var at *timestamppb.Timestamp
	switch {
	case pe.message != nil:
		guid, at = pe.message.GetChatGuid(), pe.message.GetOccurredAt()
		if err := wholeMessageChange(pe.message); err != nil {
			return err
		}
	case pe.group != nil:
		guid, at = pe.group.GetChatGuid(), pe.group.GetOccurredAt()
		if !strings.HasPrefix(guid, "any;+;") {
			return fmt.Errorf("a group event's chat_guid %q is not any;+;", guid)
		}
		if err := wholeGroupChange(pe.group); err != nil {
			return err
		}
	default:
		guid, at = pe.chat.GetChatGuid(), pe.chat.GetOccurredAt()
		if pe.chat.GetChange() == nil {
			return errors.New("a chat event without its change")
		}
	}
	if !(strings.HasPrefix(guid, "any;-;") || strings.HasPrefix(guid, "any;+;")) || len(guid) <= len("any;-;") {
		return fmt.Errorf("chat_guid %q is not any;-;<handle> or any;+;<id>", guid)
	}
	if at == nil || at.CheckValid() != nil {
		return errors.New("occurred_at is missing")
	}
	return nil
}

func validTime(t *timestamppb.Timestamp) bool { return t != nil && t.CheckValid() == nil }

func wholeMessageChange(e *imessagev1.MessageChangeEvent) error {
	switch c := e.GetChange().(type) {
	case *imessagev1.MessageChangeEvent_MessageReceived:
		m := c.MessageReceived.GetMessage()
		switch {
		case m == nil:
			return errors.New("message_received without its message")
		case m.GetGuid() == "":
			return errors.New("message_received: the message has no guid")
		case m.GetContent() == nil:
			return errors.New("message_received: the message has no content")
		case !validTime(m.GetDateCreated()):
			return errors.New("message_received: the message has no date_created")
		}
	case *imessagev1.MessageChangeEvent_MessageEdited:
		switch {
		case c.MessageEdited.GetMessageGuid() == "":
			return errors.New("message_edited names no message")
		case c.MessageEdited.GetContent() == nil:
			return errors.New("message_edited without content")
		case !validTime(c.MessageEdited.GetEditedAt()):
			return errors.New("message_edited without edited_at")
		}
	case *imessagev1.MessageChangeEvent_MessageRead:
		switch {
		case c.MessageRead.GetMessageGuid() == "":
			return errors.New("message_read names no message")
		case !validTime(c.MessageRead.GetReadAt()):
			return errors.New("message_read without read_at")
		}
	case *imessagev1.MessageChangeEvent_MessageUnsent:
		switch {
		case c.MessageUnsent.GetMessageGuid() == "":
			return errors.New("message_unsent names no message")
		case !validTime(c.MessageUnsent.GetRetractedAt()):
			return errors.New("message_unsent without retracted_at")
		}
	case *imessagev1.MessageChangeEvent_ReactionAdded:
		switch {
		case c.ReactionAdded.GetMessageGuid() == "":
			return errors.New("reaction_added names no message")
		case c.ReactionAdded.GetReaction() == nil:
			return errors.New("reaction_added without its reaction")
		case e.GetActor().GetAddress() == "":
			return errors.New("reaction_added without actor.address (who reacted)")
		}
	case *imessagev1.MessageChangeEvent_ReactionRemoved:
		switch {
		case c.ReactionRemoved.GetMessageGuid() == "":
			return errors.New("reaction_removed names no message")
		case c.ReactionRemoved.GetReaction() == nil:
			return errors.New("reaction_removed without its reaction")
		}
	case *imessagev1.MessageChangeEvent_StickerPlaced:
		if c.StickerPlaced.GetMessageGuid() == "" {
			return errors.New("sticker_placed names no message")
		}
	default:
		return errors.New("a message event without its change")
	}
	return nil
}

func wholeGroupChange(e *imessagev1.GroupChangeEvent) error {
	var p *imessagev1.SingleServiceAddressInfo
	switch c := e.GetChange().(type) {
	case *imessagev1.GroupChangeEvent_ParticipantAdded:
		p = c.ParticipantAdded.GetParticipant()
	case *imessagev1.GroupChangeEvent_ParticipantRemoved:
		p = c.ParticipantRemoved.GetParticipant()
	case *imessagev1.GroupChangeEvent_ParticipantLeft:
		p = c.ParticipantLeft.GetParticipant()
	case nil:
		return errors.New("a group event without its change")
	default:
		return nil
	}
	if p.GetAddress() == "" {
		return errors.New("a participant change names no participant")
	}
	return nil
}
