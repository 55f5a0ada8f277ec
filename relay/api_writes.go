package relay

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// The platform API's writes. Each call becomes exactly one agent command
// (docs/platform-api.md, "Writes", has the method → command table): its
// id is the caller's idempotency key scoped to the token (apiCommandID),
// its line the token's (api_writes_lines.go), and the call returns only
// with the command's final result, or, when the relay must answer first,
// with DEADLINE_EXCEEDED and the last state (api_writes_wait.go). Chat
// GUIDs arrive as any;-;/any;+; and go to the agent as they are once
// command.ParseChatGUID accepts them; every chat GUID in a response is
// command.PlatformChatGUID's spelling.

// apiWrite is one write call on its way: who calls, and what its errors
// name.
type apiWrite struct {
	s      *Server
	ctx    context.Context
	caller *apiCaller
	// chat is the chat's platform spelling, once known.
	chat string
	// message is the message the call targets, if any; a NOT_FOUND of a
	// call with one may be the message's (messageNotFound).
	message string
	// commandID is the command's id; set before run, it is used as it is
	// (a read's fresh id, api_reads.go; a download's own, api_attachments.go).
	commandID string
	// relayBlob says the command's BlobRef is an upload the relay holds.
	relayBlob bool
}

// newWrite starts a call; the auth interceptor has put the caller in ctx.
func (s *Server) newWrite(ctx context.Context) (*apiWrite, error) {
	c, _ := ctx.Value(apiCallerKey{}).(*apiCaller)
	if c == nil || len(c.lines) == 0 {
		return nil, status.Error(codes.Unauthenticated, "the call carries no platform API token")
	}
	return &apiWrite{s: s, ctx: ctx, caller: c}, nil
}

// line is the caller's line for chat g (lineForChat), or the call's
// error.
func (w *apiWrite) line(g command.ChatGUID) (string, error) {
	line, aerr := w.s.lineForChat(w.ctx, w.caller, g)
	if aerr != nil {
		return "", w.fail(aerr)
	}
	return line, nil
}

// effect is the send's effect_id as the agent's effect name, recording
// its style id in content; "" without one.
func (w *apiWrite) effect(id *string, content *imessagev1.MessageContent) (string, error) {
	if id == nil {
		return "", nil
	}
	e, err := effects.Lookup(*id)
	if err != nil {
		return "", w.fail(badRequest("effect_id", err.Error()))
	}
	content.ExpressiveSendStyleId = proto.String(e.ID)
	return e.Name, nil
}

// replyTo is the send's reply_to as the agent's, nil without one; the
// message replied to becomes the call's target for NOT_FOUND.
func (w *apiWrite) replyTo(rt *imessagev1.ReplyTarget) (*linev1.ReplyTo, error) {
	if rt == nil {
		return nil, nil
	}
	if rt.GetMessageGuid() == "" {
		return nil, w.fail(badRequest("reply_to.message_guid", "reply_to.message_guid is required"))
	}
	w.message = rt.GetMessageGuid()
	return &linev1.ReplyTo{MessageGuid: rt.GetMessageGuid(), Part: rt.GetTargetPartIndex()}, nil
}

// fail names the call's chat, message and command on e.
func (w *apiWrite) fail(e *apiError) error {
	return e.with("chat_guid", w.chat).with("message_guid", w.message).with("command_id", w.commandID)
}

// writeAnswer sends err (an *apiError with its trailers, or a status as
// it is) or resp.
func writeAnswer[T any](ctx context.Context, resp T, err error) (T, error) {
	var zero T
	var e *apiError
	switch {
	case errors.As(err, &e):
		return zero, e.send(ctx)
	case err != nil:
		return zero, err
	}
	return resp, nil
}

// chat checks a request's chat GUID and makes it the call's chat.
func (w *apiWrite) chatGUID(field, guid string) (command.ChatGUID, error) {
	g, err := command.ParseChatGUID(guid)
	switch {
	case err != nil && len(guid) > command.MaxChatGUIDBytes:
		return command.ChatGUID{}, w.fail(badRequest(field, field+": "+err.Msg))
	case err != nil:
		// Not the value itself: it is no chat GUID, and may be spelled
		// as chat.db spells one.
		return command.ChatGUID{}, w.fail(badRequest(field, field+" is not a chat GUID: want any;-;<handle> or any;+;<chat id>"))
	}
	w.chat = command.PlatformChatGUID(guid)
	return g, nil
}

// target checks a MessageTarget: its chat and message.
func (w *apiWrite) target(t *imessagev1.MessageTarget) (command.ChatGUID, error) {
	if t == nil {
		return command.ChatGUID{}, w.fail(badRequest("target", "target is required (chat_guid and message_guid)"))
	}
	g, err := w.chatGUID("target.chat_guid", t.GetChatGuid())
	if err != nil {
		return g, err
	}
	if t.GetMessageGuid() == "" {
		return g, w.fail(badRequest("target.message_guid", "target.message_guid is required"))
	}
	w.message = t.GetMessageGuid()
	return g, nil
}

// run sends cmd (a kind and its target) on line and waits for its final
// state. It returns the row and the agent's snapshot once succeeded, and
// otherwise the answer for the failure.
func (w *apiWrite) run(line string, key *string, cmd *linev1.Command) (*commandRow, *linev1.Snapshot, error) {
	s := w.s
	id, k := w.commandID, ""
	if id == "" {
		id, k = apiCommandID(w.ctx, w.caller.tokenID, key)
	}
	w.commandID, cmd.Id, cmd.Line = id, id, line
	// Watched before it is stored, so its result wakes this call however
	// soon it comes, with the final row: the call reads nothing back.
	wake, release := s.cmdDone.watch(id)
	// The command outlives the call: a caller that cancels has not
	// cancelled what it asked for.
	_, deadline, err := s.submitCommand(context.WithoutCancel(w.ctx), cmd, w.relayBlob)
	if err != nil {
		release()
		var ce *command.Error
		switch {
		case errors.Is(err, ErrIDConflict):
			return nil, nil, w.fail(newAPIError(classKeyReused, "the idempotency key was already used for a different request; use a new key for a new request").with("idempotency_key", k))
		case errors.As(err, &ce) && ce.Code == linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT:
			return nil, nil, w.fail(newAPIError(classBadRequest, "%s", ce.Msg))
		case errors.As(err, &ce) && ce.Code == linev1.ErrorCode_ERROR_CODE_NOT_FOUND:
			return nil, nil, w.fail(newAPIError(classNoAgent, "no Mac serves this token's line now; the call can be retried once one does"))
		}
		s.log.Error("platform API: submit", "command_id", id, "err", err)
		return nil, nil, w.fail(storeFault(err, "the relay could not store the command"))
	}
	// A repeated key (not created, no deadline) reads the row first: its
	// command may be final already.
	r, end, err := s.awaitCommand(w.ctx, id, wake, release, deadline)
	switch {
	case err != nil:
		s.log.Error("platform API: read the command", "command_id", id, "err", err)
		return nil, nil, w.fail(storeFault(err, "the relay could not read the command's state"))
	case end == waitCaller && errors.Is(w.ctx.Err(), context.Canceled):
		return nil, nil, status.Error(codes.Canceled, "the call was cancelled; the command goes on")
	case end == waitBound || end == waitCaller:
		e := newAPIError(classWaitBound, "no final result in time; last state: %s (the command may still finish)", lastState(r))
		e.lastState = lastState(r)
		return nil, nil, w.fail(e)
	case end == waitShutdown:
		e := newAPIError(classShutdown, "the relay is shutting down; last state: %s (the command goes on)", lastState(r))
		e.lastState = lastState(r)
		return nil, nil, w.fail(e)
	case r.state == stateFailed:
		return nil, nil, w.fail(commandFailure(r, w.message != ""))
	}
	snap := &linev1.Snapshot{}
	if err := proto.Unmarshal(r.result, snap); err != nil {
		return nil, nil, w.fail(newAPIError(classRelayFault, "the stored result is unreadable"))
	}
	return r, snap, nil
}

// message is the Message a write response carries: the agent's row (its
// GUID, the same one later events use), with content the caller gave.
func (w *apiWrite) messageOf(r *commandRow, snap *linev1.Snapshot, content *imessagev1.MessageContent) (*imessagev1.Message, error) {
	if snap.GetMessageGuid() == "" {
		return nil, w.fail(newAPIError(classRelayFault, "the agent reported success without a message GUID"))
	}
	chat := w.chat
	if snap.GetChatGuid() != "" {
		chat = command.PlatformChatGUID(snap.GetChatGuid())
	}
	m := &imessagev1.Message{
		Guid:        snap.GetMessageGuid(),
		Content:     content,
		DateCreated: snap.GetDate(),
		IsFromMe:    true,
		IsSent:      snap.GetSent(),
		IsDelivered: snap.GetDelivered(),
		ChatGuids:   []string{chat},
	}
	if m.DateCreated == nil {
		// chat.db gave no date: the moment the relay stored the result.
		m.DateCreated = timestamppb.New(r.updated)
	}
	if line := lineKey(r.line); line != "" {
		m.DestinationCallerId = &line
	}
	return m, nil
}

// chatServiceType is a service name ("iMessage", "SMS", "RCS") as the API's
// enum.
func chatServiceType(name string) imessagev1.ChatServiceType {
	switch strings.ToLower(name) {
	case "imessage":
		return imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE
	case "sms":
		return imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_SMS
	case "rcs":
		return imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_RCS
	}
	return imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_UNSPECIFIED
}

// chatOf is the Chat of a write response for the agent's chat GUID.
func chatOf(guid, service string) (*imessagev1.Chat, bool) {
	g, err := command.ParseChatGUID(guid)
	if err != nil {
		return nil, false
	}
	st := chatServiceType(service)
	if st == imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_UNSPECIFIED {
		st = chatServiceType(g.Service)
	}
	return &imessagev1.Chat{
		Guid:           command.PlatformChatGUID(guid),
		ChatIdentifier: proto.String(g.ID),
		IsGroup:        g.Group,
		Service:        st,
	}, true
}

// ---- ChatService ---------------------------------------------------------

// CreateChat finds or makes the chat with these people (create_chat).
func (a *chatAPI) CreateChat(ctx context.Context, req *imessagev1.CreateChatRequest) (*imessagev1.CreateChatResponse, error) {
	resp, err := a.s.createChat(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) createChat(ctx context.Context, req *imessagev1.CreateChatRequest) (*imessagev1.CreateChatResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	hs, cerr := command.NormalizeHandles(req.GetAddresses())
	if cerr != nil {
		return nil, w.fail(badRequest("addresses", cerr.Msg))
	}
	switch req.GetService() {
	case imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_UNSPECIFIED, imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE:
	default:
		return nil, w.fail(newAPIError(classNotServed, "line-relay creates iMessage chats only, not %s", req.GetService()))
	}
	cc := &linev1.CreateChat{Participants: hs}
	if im := req.GetInitialMessage(); im != nil {
		switch {
		case im.AttributedBody != nil:
			return nil, w.fail(newAPIError(classNotServed, "initial_message.attributed_body is not served; send plain text"))
		case im.EffectId != nil || im.Subject != nil:
			return nil, w.fail(newAPIError(classNotServed, "an initial message with an effect or a subject is not served; create the chat, then SendTextMessage"))
		}
		cc.FirstMessage = im.GetText()
	}
	line, aerr := s.lineForNewChat(ctx, w.caller, hs)
	if aerr != nil {
		return nil, w.fail(aerr)
	}
	r, snap, err := w.run(line, req.ClientMessageId, &linev1.Command{Kind: &linev1.Command_CreateChat{CreateChat: cc}})
	if err != nil {
		return nil, err
	}
	guid := snap.GetChatGuid()
	if guid == "" && len(hs) == 1 {
		guid = "any;-;" + hs[0]
	}
	chat, ok := chatOf(guid, snap.GetService())
	if !ok {
		return nil, w.fail(newAPIError(classRelayFault, "the agent created the chat without naming a chat GUID"))
	}
	w.chat = chat.Guid
	if g, err := command.ParseChatGUID(guid); err == nil {
		s.recordGroupLine(ctx, w.caller, g, line)
	}
	for _, h := range hs {
		chat.Participants = append(chat.Participants, &imessagev1.SingleServiceAddressInfo{Address: h, Service: chat.Service})
	}
	resp := &imessagev1.CreateChatResponse{Chat: chat}
	if cc.GetFirstMessage() != "" && snap.GetMessageGuid() != "" {
		m, err := w.messageOf(r, snap, &imessagev1.MessageContent{Text: proto.String(cc.GetFirstMessage())})
		if err != nil {
			return nil, err
		}
		resp.InitialMessage = m
	}
	return resp, nil
}

// chatCommand runs a chat-level command with no response body (typing,
// read marks, backgrounds).
func (s *Server) chatCommand(ctx context.Context, chatGUID string, key *string, cmd *linev1.Command) (*emptypb.Empty, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.chatGUID("chat_guid", chatGUID)
	if err != nil {
		return nil, err
	}
	line, err := w.line(g)
	if err != nil {
		return nil, err
	}
	cmd.Target = &linev1.Command_ChatGuid{ChatGuid: chatGUID}
	if _, _, err := w.run(line, key, cmd); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// SetTyping starts or stops the typing indicator (typing); a stop arrives
// with is_typing absent.
func (a *chatAPI) SetTyping(ctx context.Context, req *imessagev1.SetTypingRequest) (*emptypb.Empty, error) {
	resp, err := a.s.chatCommand(ctx, req.GetChatGuid(), nil, &linev1.Command{Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: req.GetIsTyping()}}})
	return writeAnswer(ctx, resp, err)
}

// MarkChatRead marks the chat read (mark_read).
func (a *chatAPI) MarkChatRead(ctx context.Context, req *imessagev1.MarkChatReadRequest) (*emptypb.Empty, error) {
	resp, err := a.s.chatCommand(ctx, req.GetChatGuid(), nil, &linev1.Command{Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}})
	return writeAnswer(ctx, resp, err)
}

// SetBackground sets the chat's background (set_background) from the raw
// bytes; the agent tells the image type from them, and answers only once
// the asset is distributable, so the call returns only then.
func (a *chatAPI) SetBackground(ctx context.Context, req *imessagev1.SetBackgroundRequest) (*emptypb.Empty, error) {
	if len(req.GetData()) == 0 {
		return writeAnswer[*emptypb.Empty](ctx, nil, badRequest("data", "data is empty: give the image's bytes"))
	}
	resp, err := a.s.chatCommand(ctx, req.GetChatGuid(), nil, &linev1.Command{Kind: &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{
		Source: &linev1.SetBackground_Data{Data: req.GetData()},
	}}})
	return writeAnswer(ctx, resp, err)
}

// RemoveBackground clears the chat's background (clear_background).
func (a *chatAPI) RemoveBackground(ctx context.Context, req *imessagev1.RemoveBackgroundRequest) (*emptypb.Empty, error) {
	resp, err := a.s.chatCommand(ctx, req.GetChatGuid(), nil, &linev1.Command{Kind: &linev1.Command_ClearBackground{ClearBackground: &linev1.ClearBackground{}}})
	return writeAnswer(ctx, resp, err)
}

// ---- GroupService --------------------------------------------------------

// SetDisplayName renames a group (rename_group).
func (a *groupAPI) SetDisplayName(ctx context.Context, req *imessagev1.SetDisplayNameRequest) (*imessagev1.SetDisplayNameResponse, error) {
	resp, err := a.s.setDisplayName(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) setDisplayName(ctx context.Context, req *imessagev1.SetDisplayNameRequest) (*imessagev1.SetDisplayNameResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.chatGUID("chat_guid", req.GetChatGuid())
	if err != nil {
		return nil, err
	}
	if !g.Group {
		return nil, w.fail(badRequest("chat_guid", "SetDisplayName renames a group: the chat GUID must be any;+;<id>"))
	}
	line, err := w.line(g)
	if err != nil {
		return nil, err
	}
	_, snap, err := w.run(line, req.ClientMessageId, &linev1.Command{
		Target: &linev1.Command_ChatGuid{ChatGuid: req.GetChatGuid()},
		Kind:   &linev1.Command_RenameGroup{RenameGroup: &linev1.RenameGroup{Name: req.GetDisplayName()}},
	})
	if err != nil {
		return nil, err
	}
	guid := snap.GetChatGuid()
	if guid == "" {
		guid = req.GetChatGuid()
	}
	chat, ok := chatOf(guid, snap.GetService())
	if !ok {
		return nil, w.fail(newAPIError(classRelayFault, "the agent renamed the group but named no valid chat GUID"))
	}
	chat.DisplayName = proto.String(req.GetDisplayName())
	return &imessagev1.SetDisplayNameResponse{Chat: chat}, nil
}

// ---- MessageService ------------------------------------------------------

// SendTextMessage sends text (send_text), with an effect, a reply target
// and a subject when asked.
func (a *messageAPI) SendTextMessage(ctx context.Context, req *imessagev1.SendTextMessageRequest) (*imessagev1.MessageResponse, error) {
	resp, err := a.s.sendTextMessage(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) sendTextMessage(ctx context.Context, req *imessagev1.SendTextMessageRequest) (*imessagev1.MessageResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.chatGUID("chat_guid", req.GetChatGuid())
	if err != nil {
		return nil, err
	}
	if len(req.GetFormatting()) > 0 {
		return nil, w.fail(newAPIError(classNotServed, "formatting runs are not served by line-relay yet; send the text without them"))
	}
	st := &linev1.SendText{Text: req.GetText(), Subject: req.GetSubject()}
	content := &imessagev1.MessageContent{Text: proto.String(req.GetText())}
	if st.Effect, err = w.effect(req.EffectId, content); err != nil {
		return nil, err
	}
	if st.ReplyTo, err = w.replyTo(req.GetReplyTo()); err != nil {
		return nil, err
	}
	line, err := w.line(g)
	if err != nil {
		return nil, err
	}
	r, snap, err := w.run(line, req.ClientMessageId, &linev1.Command{
		Target: &linev1.Command_ChatGuid{ChatGuid: req.GetChatGuid()},
		Kind:   &linev1.Command_SendText{SendText: st},
	})
	if err != nil {
		return nil, err
	}
	m, err := w.messageOf(r, snap, content)
	if err != nil {
		return nil, err
	}
	if req.Subject != nil {
		m.Subject = proto.String(req.GetSubject())
	}
	if st.ReplyTo != nil {
		m.ReplyTargetGuid = proto.String(st.ReplyTo.GetMessageGuid())
		m.ThreadOriginatorGuid = proto.String(st.ReplyTo.GetMessageGuid())
	}
	return &imessagev1.MessageResponse{Message: m}, nil
}

// tapbackNames are the six tapback kinds as the agent names them.
var tapbackNames = map[imessagev1.MessageReactionKind]string{
	imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LOVE:      "love",
	imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LIKE:      "like",
	imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_DISLIKE:   "dislike",
	imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LAUGH:     "laugh",
	imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_EMPHASIZE: "emphasize",
	imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_QUESTION:  "question",
}

// SetReaction adds or removes a tapback (react). Kind 0 is LOVE, so
// `reaction: {}` is a heart; is_set absent is a removal.
func (a *messageAPI) SetReaction(ctx context.Context, req *imessagev1.SetReactionRequest) (*imessagev1.MessageResponse, error) {
	resp, err := a.s.setReaction(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) setReaction(ctx context.Context, req *imessagev1.SetReactionRequest) (*imessagev1.MessageResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	rx := req.GetReaction()
	if rx == nil {
		return nil, w.fail(badRequest("reaction", "reaction is required (an empty reaction is a heart: kind 0 is LOVE)"))
	}
	react := &linev1.React{MessageGuid: req.GetTarget().GetMessageGuid(), Part: req.GetTarget().GetTargetPartIndex(), Remove: !req.GetIsSet()}
	switch kind := rx.GetKind(); {
	case tapbackNames[kind] != "":
		react.Reaction = &linev1.React_Tapback{Tapback: tapbackNames[kind]}
	case kind == imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_EMOJI && rx.GetEmoji() != "":
		react.Reaction = &linev1.React_Emoji{Emoji: rx.GetEmoji()}
	case kind == imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_EMOJI:
		return nil, w.fail(badRequest("reaction.emoji", "an EMOJI reaction needs its emoji"))
	case kind == imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_STICKER:
		return nil, w.fail(badRequest("reaction.kind", "stickers are placed with PlaceSticker, not SetReaction"))
	default:
		return nil, w.fail(badRequest("reaction.kind", "unknown reaction kind; the tapbacks are LOVE (0) to QUESTION (5), or EMOJI with its emoji"))
	}
	line, err := w.line(g)
	if err != nil {
		return nil, err
	}
	r, snap, err := w.run(line, req.ClientMessageId, &linev1.Command{
		Target: &linev1.Command_ChatGuid{ChatGuid: req.GetTarget().GetChatGuid()},
		Kind:   &linev1.Command_React{React: react},
	})
	if err != nil {
		return nil, err
	}
	m, err := w.messageOf(r, snap, &imessagev1.MessageContent{})
	if err != nil {
		return nil, err
	}
	m.ReactionTargetGuid = proto.String(react.GetMessageGuid())
	m.ReactionTargetPartIndex = proto.Int32(react.GetPart())
	m.Reaction = &imessagev1.MessageReaction{Kind: rx.GetKind(), Emoji: rx.Emoji}
	m.ReactionSelected = proto.Bool(req.GetIsSet())
	return &imessagev1.MessageResponse{Message: m}, nil
}

// EditMessage changes one of our messages' text (edit). The response is
// the edited row: its GUID and date as chat.db shows them, the new text.
// backward_compat_text is not carried: Messages writes its own for devices
// that cannot show edits.
func (a *messageAPI) EditMessage(ctx context.Context, req *imessagev1.EditMessageRequest) (*imessagev1.MessageResponse, error) {
	resp, err := a.s.editMessage(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) editMessage(ctx context.Context, req *imessagev1.EditMessageRequest) (*imessagev1.MessageResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	line, err := w.line(g)
	if err != nil {
		return nil, err
	}
	t := req.GetTarget()
	r, snap, err := w.run(line, req.ClientMessageId, &linev1.Command{
		Target: &linev1.Command_ChatGuid{ChatGuid: t.GetChatGuid()},
		Kind:   &linev1.Command_Edit{Edit: &linev1.Edit{MessageGuid: t.GetMessageGuid(), Part: t.GetTargetPartIndex(), Text: req.GetNewText()}},
	})
	if err != nil {
		return nil, err
	}
	m, err := w.messageOf(r, snap, &imessagev1.MessageContent{Text: proto.String(req.GetNewText())})
	if err != nil {
		return nil, err
	}
	return &imessagev1.MessageResponse{Message: m}, nil
}

// UnsendMessage retracts one of our messages (unsend).
func (a *messageAPI) UnsendMessage(ctx context.Context, req *imessagev1.UnsendMessageRequest) (*emptypb.Empty, error) {
	resp, err := a.s.unsendMessage(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) unsendMessage(ctx context.Context, req *imessagev1.UnsendMessageRequest) (*emptypb.Empty, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.target(req.GetTarget())
	if err != nil {
		return nil, err
	}
	line, err := w.line(g)
	if err != nil {
		return nil, err
	}
	t := req.GetTarget()
	if _, _, err := w.run(line, req.ClientMessageId, &linev1.Command{
		Target: &linev1.Command_ChatGuid{ChatGuid: t.GetChatGuid()},
		Kind:   &linev1.Command_Unsend{Unsend: &linev1.Unsend{MessageGuid: t.GetMessageGuid(), Part: t.GetTargetPartIndex()}},
	}); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}
