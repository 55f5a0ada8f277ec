package relay

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// Events on the platform API (docs/platform-api.md "Events" to "Heartbeats
// and keepalive"). The sequence of every frame is the event's relay_seq:
// the relay's one AUTOINCREMENT log, durable and increasing across
// restarts, filtered to the caller's lines, so each token sees a strictly
// increasing (gapped) sequence shared by its four live streams and
// CatchUpEvents. A live stream starts at the head when it opens and wakes
// on the relay's new-event notifier; each reads the store for itself, so a
// slow one delays nobody else, and one that does not take its frames for
// Options.EventSendTimeout is cut.

const (
	// eventBatch is how many stored events one read of a stream takes.
	eventBatch = 256
	// eventQueue is how many frames wait between a stream's reader and its
	// sender; a full queue for EventSendTimeout cuts the stream.
	eventQueue = 64
	// pruneBatch bounds the events one prune commit deletes.
	pruneBatch = 5000
)

// eventDomain is which of the API's streams an event belongs to.
type eventDomain int

const (
	domainMessage eventDomain = iota + 1
	domainGroup
	domainChat
	domainPoll // no event is ever a poll's: the relay has no polls
)

// SubscribeMessageEvents streams the message events of the caller's lines.
func (a *messageAPI) SubscribeMessageEvents(req *imessagev1.SubscribeMessageEventsRequest, st grpc.ServerStreamingServer[imessagev1.SubscribeMessageEventsResponse]) error {
	return a.s.subscribe(st, domainMessage, req.GetChatGuid(), func(seq uint64, pe platformEvent) proto.Message {
		if seq == 0 {
			return &imessagev1.SubscribeMessageEventsResponse{Payload: &imessagev1.SubscribeMessageEventsResponse_Heartbeat{Heartbeat: &imessagev1.Heartbeat{}}}
		}
		return &imessagev1.SubscribeMessageEventsResponse{Sequence: &seq, Payload: &imessagev1.SubscribeMessageEventsResponse_MessageChanged{MessageChanged: pe.message}}
	})
}

// SubscribeGroupEvents streams the group events of the caller's lines.
func (a *groupAPI) SubscribeGroupEvents(req *imessagev1.SubscribeGroupEventsRequest, st grpc.ServerStreamingServer[imessagev1.SubscribeGroupEventsResponse]) error {
	return a.s.subscribe(st, domainGroup, req.GetChatGuid(), func(seq uint64, pe platformEvent) proto.Message {
		if seq == 0 {
			return &imessagev1.SubscribeGroupEventsResponse{Payload: &imessagev1.SubscribeGroupEventsResponse_Heartbeat{Heartbeat: &imessagev1.Heartbeat{}}}
		}
		return &imessagev1.SubscribeGroupEventsResponse{Sequence: &seq, Payload: &imessagev1.SubscribeGroupEventsResponse_GroupChanged{GroupChanged: pe.group}}
	})
}

// SubscribeChatEvents streams the chat events of the caller's lines
// (backgrounds set and removed).
func (a *chatAPI) SubscribeChatEvents(req *imessagev1.SubscribeChatEventsRequest, st grpc.ServerStreamingServer[imessagev1.SubscribeChatEventsResponse]) error {
	return a.s.subscribe(st, domainChat, req.GetChatGuid(), func(seq uint64, pe platformEvent) proto.Message {
		if seq == 0 {
			return &imessagev1.SubscribeChatEventsResponse{Payload: &imessagev1.SubscribeChatEventsResponse_Heartbeat{Heartbeat: &imessagev1.Heartbeat{}}}
		}
		return &imessagev1.SubscribeChatEventsResponse{Sequence: &seq, Payload: &imessagev1.SubscribeChatEventsResponse_ChatChanged{ChatChanged: pe.chat}}
	})
}

// SubscribePollEvents is an open stream of heartbeats: the relay has no
// polls, and the SDK always opens it (UNIMPLEMENTED is retried for ever,
// noisily).
func (a *pollAPI) SubscribePollEvents(_ *imessagev1.SubscribePollEventsRequest, st grpc.ServerStreamingServer[imessagev1.SubscribePollEventsResponse]) error {
	return a.s.subscribe(st, domainPoll, "", func(uint64, platformEvent) proto.Message {
		return &imessagev1.SubscribePollEventsResponse{Payload: &imessagev1.SubscribePollEventsResponse_Heartbeat{Heartbeat: &imessagev1.Heartbeat{}}}
	})
}

// CatchUpEvents replays the caller's events after its cursor up to the
// head as it stands when the call starts, then sends complete{head} and
// ends with OK. A cursor the relay cannot serve without a gap (events after
// it were pruned, or it is ahead of this relay's log) is
// FAILED_PRECONDITION: the SDK then drops it and resubscribes live.
func (a *eventAPI) CatchUpEvents(req *imessagev1.CatchUpEventsRequest, st grpc.ServerStreamingServer[imessagev1.CatchUpEventsResponse]) error {
	es, err := a.s.openEventStream(st, "")
	if err != nil {
		return err
	}
	defer es.close()
	return es.catchUp(req)
}

// frameFunc builds a stream's frame: an event's (seq > 0) or a heartbeat
// (seq 0).
type frameFunc func(seq uint64, pe platformEvent) proto.Message

// eventStream is one platform API event stream of one caller. The handler
// goroutine reads and renders; a sender goroutine does the stream's Sends,
// so the handler notices a stream that stopped taking frames.
type eventStream struct {
	s      *Server
	ctx    context.Context
	caller *apiCaller
	stream grpc.ServerStream
	log    *slog.Logger
	chat   string // ChatKey of the one chat asked for; "" for all

	out      chan proto.Message // handler → sender
	stop     chan struct{}      // closed by close: the sender sends nothing more
	sendDone chan error         // the sender's end: nil once out is closed and drained
}

// openEventStream checks the caller and the chat filter and starts the
// stream's sender.
func (s *Server) openEventStream(st grpc.ServerStream, chatGUID string) (*eventStream, error) {
	ctx := st.Context()
	c, _ := ctx.Value(apiCallerKey{}).(*apiCaller)
	if c == nil {
		return nil, status.Error(codes.Unauthenticated, "no platform API token")
	}
	es := &eventStream{
		s: s, ctx: ctx, caller: c, stream: st,
		log:      s.log.With("api_token", c.tokenID),
		out:      make(chan proto.Message, eventQueue),
		stop:     make(chan struct{}),
		sendDone: make(chan error, 1),
	}
	if chatGUID != "" {
		if _, err := command.ParseChatGUID(chatGUID); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Msg)
		}
		es.chat = command.ChatKey(chatGUID)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		es.send()
	}()
	return es, nil
}

// send is the sender goroutine. It stops at the first failed Send, when
// out is closed and drained (a replay's normal end), or at stop. A Send
// that blocks because the client stopped reading ends when the handler
// has returned and gRPC has finished the stream.
func (es *eventStream) send() {
	for {
		select {
		case <-es.stop:
			es.sendDone <- nil
			return
		case m, ok := <-es.out:
			if !ok {
				es.sendDone <- nil
				return
			}
			select {
			case <-es.stop:
				es.sendDone <- nil
				return
			default:
			}
			if err := es.stream.SendMsg(m); err != nil {
				es.sendDone <- err
				return
			}
		}
	}
}

// close stops the sender without waiting for it (it may be stuck in a Send
// only the end of the stream releases).
func (es *eventStream) close() { close(es.stop) }

// flush lets the sender send everything queued and waits for it, at most
// EventSendTimeout.
func (es *eventStream) flush() error {
	close(es.out)
	t := time.NewTimer(es.s.opts.EventSendTimeout)
	defer t.Stop()
	select {
	case err := <-es.sendDone:
		return err
	case <-t.C:
		return es.tooSlow()
	case <-es.ctx.Done():
		return status.FromContextError(es.ctx.Err()).Err()
	}
}

func (es *eventStream) tooSlow() error {
	es.log.Warn("platform API: event stream cut: the client did not take its frames", "timeout", es.s.opts.EventSendTimeout)
	return status.Errorf(codes.ResourceExhausted, "the stream did not take its events for %s; reconnect and catch up", es.s.opts.EventSendTimeout)
}

// push queues a frame, waiting at most EventSendTimeout for room.
func (es *eventStream) push(m proto.Message) error {
	select {
	case es.out <- m:
		return nil
	default:
	}
	t := time.NewTimer(es.s.opts.EventSendTimeout)
	defer t.Stop()
	select {
	case es.out <- m:
		return nil
	case err := <-es.sendDone:
		return es.sendEnded(err)
	case <-t.C:
		return es.tooSlow()
	case <-es.ctx.Done():
		return status.FromContextError(es.ctx.Err()).Err()
	case <-es.s.ctx.Done():
		return status.Error(codes.Unavailable, drainReasonShutdown)
	}
}

// pushHeartbeat queues a heartbeat unless the queue is full (then the
// stream is anything but idle).
func (es *eventStream) pushHeartbeat(frame frameFunc) {
	select {
	case es.out <- frame(0, platformEvent{}):
	default:
	}
}

func (es *eventStream) sendEnded(err error) error {
	if err == nil {
		err = status.Error(codes.Canceled, "the stream ended")
	}
	return err
}

// tokenValid checks the caller's token again (at every heartbeat): a
// token revoked while its streams are open ends them. A failed check keeps
// the stream (the next heartbeat checks again).
func (es *eventStream) tokenValid() error {
	revoked, err := es.s.store.apiTokenRevoked(es.ctx, es.caller.tokenID)
	switch {
	case err != nil:
		es.log.Warn("platform API: token check failed; the stream stays open", "err", err)
	case revoked:
		return status.Error(codes.Unauthenticated, "the token was revoked")
	}
	return nil
}

// apiTokenRevoked reports whether the API token id is revoked (or gone).
func (st *store) apiTokenRevoked(ctx context.Context, id string) (bool, error) {
	var at int64
	err := st.db.QueryRowContext(ctx, `SELECT revoked_at FROM api_tokens WHERE id = ?`, id).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil
	}
	return at != 0, err
}

// render renders a stored event, or reports why it is skipped: false for
// an event of no platform API kind, of another chat than the one asked
// for, or that cannot be rendered whole (logged: one malformed event must
// never reach the SDK, which cannot get past it).
func (es *eventStream) render(row eventRow) (platformEvent, bool) {
	ev := &linev1.Event{}
	if err := proto.Unmarshal(row.event, ev); err != nil {
		es.log.Error("platform API: stored event is unreadable; skipped", "relay_seq", row.relaySeq, "err", err)
		return platformEvent{}, false
	}
	if es.chat != "" && command.ChatKey(ev.GetChatGuid()) != es.chat {
		return platformEvent{}, false
	}
	pe, err := renderEvent(ev, row.receivedAt, func(guid string) *linev1.MessageEvent {
		m, err := es.s.store.originMessage(es.ctx, row.agentID, guid)
		if err != nil {
			es.log.Warn("platform API: read the edited message", "relay_seq", row.relaySeq, "err", err)
		}
		return m
	})
	switch {
	case errors.Is(err, errNoPlatformEvent):
		return platformEvent{}, false
	case err != nil:
		es.log.Warn("platform API: event cannot be rendered whole; skipped", "relay_seq", row.relaySeq, "key", ev.GetKey(), "agent_id", row.agentID, "err", err)
		return platformEvent{}, false
	}
	return pe, true
}

// domainOf is the stream a rendered event goes to.
func domainOf(pe platformEvent) eventDomain {
	switch {
	case pe.message != nil:
		return domainMessage
	case pe.group != nil:
		return domainGroup
	}
	return domainChat
}

// subscribe serves one live stream of domain: a heartbeat at once (the
// client sees the stream is open) and every EventHeartbeat, and every event
// of the caller's lines stored after the stream opened.
func (s *Server) subscribe(st grpc.ServerStream, domain eventDomain, chatGUID string, frame frameFunc) error {
	es, err := s.openEventStream(st, chatGUID)
	if err != nil {
		return err
	}
	defer es.close()
	defer s.metrics.subscribed(domain)()
	cursor, err := s.store.eventHead(es.ctx)
	if err != nil {
		es.log.Error("platform API: read the event head", "err", err)
		return status.Error(codes.Unavailable, "the relay could not read its event log; try again")
	}
	es.pushHeartbeat(frame)
	hb := time.NewTicker(s.opts.EventHeartbeat)
	defer hb.Stop()
	for {
		woken := s.feed.wait() // taken before the read, so no store is missed
		if domain != domainPoll {
			for {
				rows, err := s.store.lineEventsAfter(es.ctx, es.caller.lines, cursor, 0, eventBatch)
				if err != nil {
					if es.ctx.Err() != nil {
						return status.FromContextError(es.ctx.Err()).Err()
					}
					es.log.Error("platform API: read events", "err", err)
					return status.Error(codes.Unavailable, "the relay could not read its event log; reconnect and catch up")
				}
				for _, row := range rows {
					cursor = row.relaySeq
					pe, ok := es.render(row)
					if !ok || domainOf(pe) != domain {
						continue
					}
					if err := es.push(frame(uint64(row.relaySeq), pe)); err != nil {
						return err
					}
				}
				if len(rows) < eventBatch {
					break
				}
			}
		}
		select {
		case <-woken:
		case <-hb.C:
			if err := es.tokenValid(); err != nil {
				return err
			}
			es.pushHeartbeat(frame)
		case err := <-es.sendDone:
			return es.sendEnded(err)
		case <-es.ctx.Done():
			return status.FromContextError(es.ctx.Err()).Err()
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, drainReasonShutdown)
		}
	}
}

// catchUp serves CatchUpEvents on es.
func (es *eventStream) catchUp(req *imessagev1.CatchUpEventsRequest) error {
	s := es.s
	lines := es.caller.lines
	unavailable := func(what string, err error) error {
		if es.ctx.Err() != nil {
			return status.FromContextError(es.ctx.Err()).Err()
		}
		es.log.Error("platform API: catch-up: "+what, "err", err)
		return status.Error(codes.Unavailable, "the relay could not read its event log; try again")
	}
	head, err := s.store.eventHead(es.ctx)
	if err != nil {
		return unavailable("read the event head", err)
	}
	pruned, err := s.store.prunedThrough(es.ctx, lines)
	if err != nil {
		return unavailable("read the pruned sequence", err)
	}
	after := int64(0)
	if req.AfterSequence != nil {
		if req.GetAfterSequence() > uint64(head) {
			return status.Errorf(codes.FailedPrecondition,
				"cursor %d is ahead of this relay's event log (head %d): it is from another relay or data dir; resubscribe without it", req.GetAfterSequence(), head)
		}
		after = int64(req.GetAfterSequence())
		if after < pruned {
			return status.Errorf(codes.FailedPrecondition,
				"events after cursor %d are past the relay's retention (%s) and were deleted; resubscribe without the cursor", after, s.opts.EventRetention)
		}
	}
	frame := func(seq uint64, pe platformEvent) proto.Message {
		r := &imessagev1.CatchUpEventsResponse{Sequence: &seq}
		switch {
		case pe.message != nil:
			r.Payload = &imessagev1.CatchUpEventsResponse_MessageChanged{MessageChanged: pe.message}
		case pe.group != nil:
			r.Payload = &imessagev1.CatchUpEventsResponse_GroupChanged{GroupChanged: pe.group}
		default:
			r.Payload = &imessagev1.CatchUpEventsResponse_ChatChanged{ChatChanged: pe.chat}
		}
		return r
	}
	heartbeat := func(uint64, platformEvent) proto.Message {
		return &imessagev1.CatchUpEventsResponse{Payload: &imessagev1.CatchUpEventsResponse_Heartbeat{Heartbeat: &imessagev1.Heartbeat{}}}
	}
	hb := time.NewTicker(s.opts.EventHeartbeat)
	defer hb.Stop()
	for cursor := after; cursor < head; {
		rows, err := s.store.lineEventsAfter(es.ctx, lines, cursor, head, eventBatch)
		if err != nil {
			return unavailable("read events", err)
		}
		for _, row := range rows {
			if pe, ok := es.render(row); ok {
				if err := es.push(frame(uint64(row.relaySeq), pe)); err != nil {
					return err
				}
			}
		}
		if len(rows) < eventBatch {
			break
		}
		cursor = rows[len(rows)-1].relaySeq
		select {
		case <-hb.C:
			es.pushHeartbeat(heartbeat)
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, drainReasonShutdown)
		default:
		}
	}
	// Pruning may have overtaken a long replay from a cursor at the edge of
	// the retention: then part of the gap may be gone.
	if req.AfterSequence != nil {
		if now, err := s.store.prunedThrough(es.ctx, lines); err != nil {
			return unavailable("read the pruned sequence", err)
		} else if now > pruned && now > after {
			return status.Errorf(codes.FailedPrecondition, "events after cursor %d passed the relay's retention (%s) during the replay; resubscribe without the cursor", after, s.opts.EventRetention)
		}
	}
	h := uint64(head)
	if err := es.push(&imessagev1.CatchUpEventsResponse{Payload: &imessagev1.CatchUpEventsResponse_Complete{Complete: &imessagev1.CatchUpEventsComplete{HeadSequence: h}}}); err != nil {
		return err
	}
	return es.flush()
}
