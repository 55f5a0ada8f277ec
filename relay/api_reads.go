package relay

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// The platform API's reads, GetMessage and GetChat: each becomes one agent
// command (get_message, get_chat) that the line's Mac answers from its
// chat.db, so the answer is what Messages holds now, never a guess made
// from the request. A message is shown through the event renderer
// (api_events_render.go), so it reads exactly as its event did.
//
// Reads differ from writes in three ways:
//   - every read is its own command, with a fresh id (readCommandID): an
//     idempotency key on a read is ignored, so two reads are never one
//     stale answer;
//   - a read waits at most readTimeout: the SDK awaits GetMessage while it
//     handles an inbound event, and any error there only drops that event;
//   - a finished read is deleted readRetention after it finished
//     (pruneReads), so reads do not pile up in the store.

const (
	// readTimeout is a read's command deadline (the relay's default when
	// that is shorter).
	readTimeout = 15 * time.Second
	// readIDPrefix starts every read's command id ("api-read:<token
	// id>:<random>"), so the reads can be found, and pruned, by a range of
	// the commands table's primary key.
	readIDPrefix = "api-read:"
	// readIDEnd is the first id after every id with readIDPrefix.
	readIDEnd = "api-read;"
	// readRetention is how long a finished read stays to be looked up with
	// GET /v1/commands/{id} (its id is in the error's context).
	readRetention = 10 * time.Minute
	// pruneReadsBatch bounds the reads one prune deletes.
	pruneReadsBatch = 1000
)

// readCommandID is a fresh command id for a read by tokenID.
func readCommandID(tokenID string) string {
	return readIDPrefix + tokenID + ":" + newAgentID()[len(agentIDPrefix):]
}

// ---- MessageService.GetMessage -------------------------------------------

// GetMessage reads one message by its GUID (get_message) from the chat.db
// of the token's line that has it. NOT_FOUND (messageNotFound) when no line
// of the token has it, which the SDK answers with a stub target.
func (a *messageAPI) GetMessage(ctx context.Context, req *imessagev1.GetMessageRequest) (*imessagev1.GetMessageResponse, error) {
	resp, err := a.s.getMessage(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) getMessage(ctx context.Context, req *imessagev1.GetMessageRequest) (*imessagev1.GetMessageResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	guid := req.GetMessageGuid()
	switch {
	case guid == "":
		return nil, w.fail(badRequest("message_guid", "message_guid is required"))
	case len(guid) > command.MaxChatGUIDBytes:
		return nil, w.fail(badRequest("message_guid", "message_guid is longer than a message GUID can be"))
	}
	w.message = guid
	lines, known, aerr := s.messageLines(ctx, w.caller, guid)
	if aerr != nil {
		return nil, w.fail(aerr)
	}
	var msg *imessagev1.Message
	err = s.readOn(w, lines, !known, func(_ string) *linev1.Command {
		return &linev1.Command{Kind: &linev1.Command_GetMessage{GetMessage: &linev1.GetMessage{MessageGuid: guid}}}
	}, func(r *commandRow, snap *linev1.Snapshot, rw *apiWrite) error {
		m, e := storedMessage(snap.GetStoredMessage(), r, w.caller.lines)
		if e != nil {
			return rw.fail(e)
		}
		msg = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &imessagev1.GetMessageResponse{Message: msg}, nil
}

// messageLines are the lines to ask for message guid, in order, and
// whether the relay knows the message is on them. A dedicated token has
// one line. For a pool, the line whose events carried the message's own
// event (it was sent or received there); a message the relay has no event
// of (older than the event retention, or from before the line's Mac was
// enrolled) is looked for on the pool's lines whose Mac is connected now,
// one line per Mac (one chat.db each), in the token's order.
func (s *Server) messageLines(ctx context.Context, c *apiCaller, guid string) ([]string, bool, *apiError) {
	if !c.pool {
		return c.lines[:1], true, nil
	}
	line, err := s.store.messageLine(ctx, c.lines, guid)
	if err != nil {
		s.log.Error("platform API: find a message's line", "token_id", c.tokenID, "err", err)
		return nil, false, storeFault(err, "the relay could not read its events")
	}
	if line != "" {
		return []string{line}, true, nil
	}
	lines, aerr := s.connectedPoolLines(ctx, c)
	return lines, false, aerr
}

// messageLine is the line among lineKeys whose events include the own event
// (message, tapback or group action) of the message guid, "" when none
// does. Each agent's events are looked up by (agent_id, key), the unique
// index, so the read never scans the events table.
func (st *store) messageLine(ctx context.Context, lineKeys []string, guid string) (string, error) {
	args := []any{guid + "/message/0", guid + "/tapback/0", guid + "/group/0"}
	for _, k := range lineKeys {
		args = append(args, k)
	}
	var line string
	err := st.db.QueryRowContext(ctx, `SELECT e.line_key FROM agents a JOIN events e ON e.agent_id = a.id AND e.key IN (?, ?, ?)
		WHERE e.line_key IN (?`+strings.Repeat(", ?", len(lineKeys)-1)+`) ORDER BY e.relay_seq DESC LIMIT 1`, args...).Scan(&line)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return line, err
}

// connectedPoolLines are the pool's lines whose Mac is connected now, the
// first of each Mac's lines in the token's order. None is classNoAgent.
func (s *Server) connectedPoolLines(ctx context.Context, c *apiCaller) ([]string, *apiError) {
	var out []string
	agents := map[string]bool{}
	for _, l := range c.lines {
		owner, err := s.store.lineOwner(ctx, l)
		if err != nil {
			s.log.Error("platform API: read line bindings", "token_id", c.tokenID, "err", err)
			return nil, storeFault(err, "the relay could not read its line bindings")
		}
		if owner == "" || agents[owner] {
			continue
		}
		if up, err := s.connectedAnywhere(ctx, owner); err != nil || !up {
			if err != nil {
				s.log.Error("platform API: read where the agent is connected", "token_id", c.tokenID, "err", err)
				return nil, storeFault(err, "the relay could not read its agents")
			}
			continue
		}
		agents[owner] = true
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, noPoolLine()
	}
	return out, nil
}

// storedMessage is the agent's get_message answer as the platform API's
// Message: the row's own event through the event renderer, with the row's
// state as chat.db shows it now. A message on a line that is not one of
// lineKeys (another address of the same Mac's account) is not the token's
// to see: NOT_FOUND, as it never reached the token's event streams either.
func storedMessage(sm *linev1.StoredMessage, r *commandRow, lineKeys []string) (*imessagev1.Message, *apiError) {
	ev := sm.GetEvent()
	if ev == nil || ev.GetMessageGuid() == "" {
		return nil, newAPIError(classRelayFault, "the agent's read of the message carries no message")
	}
	ev = proto.Clone(ev).(*linev1.Event)
	if ev.GetLine() == "" {
		ev.Line = r.line // the rule events follow: no line is the agent's line
	}
	if !slices.Contains(lineKeys, lineKey(ev.GetLine())) {
		return nil, newAPIError(classMessageNotFound, "message %s is not on a line of this token", ev.GetMessageGuid())
	}
	ev.Historical = false // a read is asked for: history is what it is for
	m, err := messageOfEvent(ev, r.updated)
	if err != nil {
		return nil, newAPIError(classRelayFault, "the agent's read of message %s cannot be shown: %v", ev.GetMessageGuid(), err)
	}
	if m.GetIsFromMe() {
		m.IsSent = sm.GetSent()
		m.IsDelivered = sm.GetDelivered()
	}
	m.SendErrorCode = sm.GetError()
	m.DateDelivered, m.DateRead = sm.GetDateDelivered(), sm.GetDateRead()
	m.DateEdited, m.DateRetracted = sm.GetDateEdited(), sm.GetDateRetracted()
	return m, nil
}

// messageOfEvent renders a row's own event as a Message: a message as its
// message_received carries it; a tapback as the reaction row (the
// reaction's target, kind and whether it is set); a group action as its
// item.
func messageOfEvent(ev *linev1.Event, at time.Time) (*imessagev1.Message, error) {
	if gr := ev.GetGroup(); gr != nil {
		return groupItem(ev, gr, at)
	}
	pe, err := renderEvent(ev, at, nil)
	if err != nil {
		return nil, err
	}
	e := pe.message
	if m := e.GetMessageReceived().GetMessage(); m != nil {
		return m, nil
	}
	m := &imessagev1.Message{
		Guid: ev.GetMessageGuid(), Content: &imessagev1.MessageContent{}, DateCreated: e.GetOccurredAt(),
		Sender: e.GetActor(), IsFromMe: e.GetIsFromMe(), ChatGuids: []string{e.GetChatGuid()},
	}
	if l := lineKey(ev.GetLine()); l != "" {
		m.DestinationCallerId = proto.String(l)
	}
	switch c := e.GetChange().(type) {
	case *imessagev1.MessageChangeEvent_ReactionAdded:
		m.ReactionTargetGuid, m.ReactionTargetPartIndex = proto.String(c.ReactionAdded.GetMessageGuid()), c.ReactionAdded.TargetPartIndex
		m.Reaction, m.ReactionSelected = c.ReactionAdded.GetReaction(), proto.Bool(true)
	case *imessagev1.MessageChangeEvent_ReactionRemoved:
		m.ReactionTargetGuid, m.ReactionTargetPartIndex = proto.String(c.ReactionRemoved.GetMessageGuid()), c.ReactionRemoved.TargetPartIndex
		m.Reaction, m.ReactionSelected = c.ReactionRemoved.GetReaction(), proto.Bool(false)
	case *imessagev1.MessageChangeEvent_StickerPlaced:
		m.ReactionTargetGuid, m.ReactionTargetPartIndex = proto.String(c.StickerPlaced.GetMessageGuid()), c.StickerPlaced.TargetPartIndex
		m.Reaction = &imessagev1.MessageReaction{Kind: imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_STICKER}
		m.ReactionSelected = proto.Bool(true)
	default:
		return nil, errors.New("the row is neither a message nor a reaction")
	}
	return m, nil
}

// groupItems are the message item types of group actions.
var groupItems = map[linev1.GroupAction]imessagev1.MessageItemType{
	linev1.GroupAction_GROUP_ACTION_PARTICIPANT_ADDED:   imessagev1.MessageItemType_MESSAGE_ITEM_TYPE_PARTICIPANT_CHANGE,
	linev1.GroupAction_GROUP_ACTION_PARTICIPANT_REMOVED: imessagev1.MessageItemType_MESSAGE_ITEM_TYPE_PARTICIPANT_CHANGE,
	linev1.GroupAction_GROUP_ACTION_RENAMED:             imessagev1.MessageItemType_MESSAGE_ITEM_TYPE_GROUP_NAME_CHANGE,
}

// groupItem is a group action row (someone added, a rename, an icon) as a
// Message of its item type; everything else chat.db files as a chat action.
func groupItem(ev *linev1.Event, gr *linev1.GroupEvent, at time.Time) (*imessagev1.Message, error) {
	g, perr := command.ParseChatGUID(ev.GetChatGuid())
	if perr != nil {
		return nil, errors.New("chat_guid: " + perr.Msg)
	}
	date := ev.GetDate()
	if !validTime(date) {
		date = timestamppb.New(at)
	}
	line := lineKey(ev.GetLine())
	m := &imessagev1.Message{
		Guid: ev.GetMessageGuid(), Content: &imessagev1.MessageContent{}, DateCreated: date,
		Sender: platformAddress(gr.GetActor(), chatServiceType(g.Service)), IsFromMe: line != "" && lineKey(gr.GetActor()) == line,
		ItemType: imessagev1.MessageItemType_MESSAGE_ITEM_TYPE_CHAT_ACTION, ChatGuids: []string{command.PlatformChatGUID(ev.GetChatGuid())},
	}
	if t, ok := groupItems[gr.GetAction()]; ok {
		m.ItemType = t
	}
	if gr.GetAction() == linev1.GroupAction_GROUP_ACTION_RENAMED {
		m.GroupTitle = proto.String(gr.GetName())
	}
	if line != "" {
		m.DestinationCallerId = proto.String(line)
	}
	return m, nil
}

// ---- ChatService.GetChat -------------------------------------------------

// GetChat reads the chat (get_chat) from its line's chat.db: who is in it,
// its name, whether it is a group. NOT_FOUND (chatNotFound) when the line
// has no such chat.
func (a *chatAPI) GetChat(ctx context.Context, req *imessagev1.GetChatRequest) (*imessagev1.GetChatResponse, error) {
	resp, err := a.s.getChat(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) getChat(ctx context.Context, req *imessagev1.GetChatRequest) (*imessagev1.GetChatResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.chatGUID("chat_guid", req.GetChatGuid())
	if err != nil {
		return nil, err
	}
	lines, known, aerr := s.chatLines(ctx, w.caller, g)
	if aerr != nil {
		return nil, w.fail(aerr)
	}
	var chat *imessagev1.Chat
	err = s.readOn(w, lines, !known, func(_ string) *linev1.Command {
		return &linev1.Command{Target: &linev1.Command_ChatGuid{ChatGuid: req.GetChatGuid()}, Kind: &linev1.Command_GetChat{GetChat: &linev1.GetChat{}}}
	}, func(_ *commandRow, snap *linev1.Snapshot, rw *apiWrite) error {
		c, ok := storedChat(snap.GetStoredChat())
		if !ok {
			return rw.fail(newAPIError(classRelayFault, "the agent's read of the chat names no valid chat GUID"))
		}
		chat = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &imessagev1.GetChatResponse{Chat: chat}, nil
}

// chatLines are the lines to ask for chat g, and whether the relay knows
// the chat is theirs: a dedicated token's line; for a pool, the line
// recorded for the chat's person or group (pool_assignments), else, since
// a read records nothing, the pool's connected lines, one per Mac.
func (s *Server) chatLines(ctx context.Context, c *apiCaller, g command.ChatGUID) ([]string, bool, *apiError) {
	if !c.pool {
		return c.lines[:1], true, nil
	}
	key := g.ID
	if g.Group {
		key = groupKey(g)
	}
	line, err := s.store.poolAssignment(ctx, c.tokenID, key)
	if err != nil {
		s.log.Error("platform API: pool assignment", "token_id", c.tokenID, "err", err)
		return nil, false, storeFault(err, "the relay could not read the pool assignment")
	}
	if line != "" {
		return []string{line}, true, nil
	}
	lines, aerr := s.connectedPoolLines(ctx, c)
	return lines, false, aerr
}

// storedChat is the agent's get_chat answer as the platform API's Chat.
func storedChat(sc *linev1.StoredChat) (*imessagev1.Chat, bool) {
	chat, ok := chatOf(sc.GetChatGuid(), sc.GetService())
	if !ok {
		return nil, false
	}
	if id := sc.GetChatIdentifier(); id != "" {
		chat.ChatIdentifier = proto.String(id)
	}
	if n := sc.GetDisplayName(); n != "" {
		chat.DisplayName = proto.String(n)
	}
	if id := sc.GetGroupId(); id != "" && chat.IsGroup {
		chat.GroupId = proto.String(id)
	}
	chat.IsArchived, chat.IsFiltered = sc.GetArchived(), sc.GetFiltered()
	for _, p := range sc.GetParticipants() {
		svc := chatServiceType(p.GetService())
		if svc == imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_UNSPECIFIED {
			svc = chat.Service
		}
		if a := platformAddress(p.GetHandle(), svc); a != nil {
			chat.Participants = append(chat.Participants, a)
		}
	}
	return chat, true
}

// ---- running a read ------------------------------------------------------

// readOn runs the read build makes on each of lines in turn, each as its
// own command with a fresh id, all within one deadline, until one answers
// and show accepts the answer. With search, a NOT_FOUND (the line's chat.db
// has no such thing, or show says it is not the token's) moves on to the
// next line; an answer of another kind is kept, and returned when no line
// finds it, since that line could not be asked. Without search, lines is
// the one line known to have it, and its answer is the call's.
func (s *Server) readOn(w *apiWrite, lines []string, search bool, build func(line string) *linev1.Command,
	show func(*commandRow, *linev1.Snapshot, *apiWrite) error) error {
	deadline := s.now().Add(min(readTimeout, s.opts.DefaultCommandTimeout))
	var notFound, other error
	for _, line := range lines {
		if !s.now().Before(deadline) {
			break
		}
		rw := &apiWrite{s: s, ctx: w.ctx, caller: w.caller, chat: w.chat, message: w.message, commandID: readCommandID(w.caller.tokenID)}
		cmd := build(line)
		cmd.Deadline = timestamppb.New(deadline)
		r, snap, err := rw.run(line, nil, cmd)
		if err == nil {
			err = show(r, snap, rw)
		}
		var e *apiError
		switch {
		case err == nil:
			return nil
		case !errors.As(err, &e):
			return err // the caller went away
		case e.class.status == codes.NotFound && search:
			notFound = err
		case search:
			other = firstErr(other, err)
		default:
			return err
		}
	}
	switch {
	case other != nil:
		return other
	case notFound != nil:
		return notFound
	}
	return w.fail(newAPIError(classWaitBound, "no line answered before the read's deadline"))
}

// firstErr is a when set, else b.
func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// ---- retention -----------------------------------------------------------

// pruneReads deletes up to limit read commands (ids with readIDPrefix,
// kinds get_message and get_chat) final before cutoff.
func (st *store) pruneReads(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	due, args := st.readsDue(cutoff)
	return st.deleteCommands(ctx, due, args, limit)
}

// readsDue is the condition, and its arguments, of the reads final before
// cutoff. It is read by the reads' range of the primary key alone, never
// by the state index: that would visit the finished commands of every
// kind, each sweeper turn (store_dialect.go, keyOnly).
func (st *store) readsDue(cutoff time.Time) (string, []any) {
	k := st.d.keyOnly
	return `id >= ? AND id < ? AND ` + k + `kind IN ('get_message', 'get_chat') AND ` + k + `state IN (?, ?) AND ` + k + `updated_at < ?`,
		[]any{readIDPrefix, readIDEnd, stateSucceeded, stateFailed, cutoff.UnixNano()}
}
