package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// The platform API's event streams, end to end: a Go client of
// photon.imessage.v1 over the relay's TLS listener, and the raw test agent
// sending events.

const (
	evLine  = "+15550000001"
	evLine2 = "+15550000002"
	evPeer  = "+15557654321"
	evDM    = "iMessage;-;" + evPeer
	evGroup = "iMessage;+;chat123456"
)

// evAgent is a connected test agent that numbers its events.
type evAgent struct {
	*testAgent
	line string
	seq  uint64
}

func connectEvAgent(t *testing.T, srv *Server, line string) *evAgent {
	t.Helper()
	a := enrollAgent(t, srv, line)
	a.connect()
	return &evAgent{testAgent: a, line: line}
}

// emit sends events (their sequence and, when empty, line filled in) and
// waits until the relay has stored them.
func (a *evAgent) emit(evs ...*linev1.Event) {
	a.t.Helper()
	for _, ev := range evs {
		a.seq++
		ev.Sequence = a.seq
		if ev.Line == "" {
			ev.Line = a.line
		}
		if ev.Key == "" {
			ev.Key = fmt.Sprintf("%s/test/%d", ev.GetMessageGuid(), a.seq)
		}
		a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: ev}})
	}
	for a.nextAck() < a.seq {
	}
}

func textEvent(chat, guid, text string) *linev1.Event {
	return &linev1.Event{ChatGuid: chat, MessageGuid: guid, Date: timestamppb.New(evTime(0)),
		Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{Text: text, Sender: evPeer, Service: "iMessage"}}}
}

func evTime(minute int) time.Time { return time.Date(2026, 3, 1, 12, minute, 0, 0, time.UTC) }

// apiToken makes a platform API token; several lines make a pool.
func newAPIToken(t *testing.T, srv *Server, lines ...string) string {
	t.Helper()
	tok, _, err := srv.CreateAPIToken(context.Background(), lines, len(lines) > 1)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// apiCtx is a call context carrying tok, canceled when the test ends.
func apiCtx(t *testing.T, tok string) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// frames reads a server stream in the background.
type streamFrames[T proto.Message] struct {
	ch   chan T
	done chan struct{}
	err  error // set before done is closed
}

func collectFrames[T proto.Message](t *testing.T, st interface{ Recv() (T, error) }) *streamFrames[T] {
	f := &streamFrames[T]{ch: make(chan T, 4096), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for {
			m, err := st.Recv()
			if err != nil {
				f.err = err
				return
			}
			f.ch <- m
		}
	}()
	return f
}

// sequenced is every event frame: they all have a sequence.
type sequenced interface {
	proto.Message
	GetSequence() uint64
}

// next returns the next frame with a sequence (an event), skipping
// heartbeats.
func nextEvent[T sequenced](t *testing.T, f *streamFrames[T]) T {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case m := <-f.ch:
			if m.GetSequence() != 0 {
				return m
			}
		case <-f.done:
			// Drain what arrived before the end.
			select {
			case m := <-f.ch:
				if m.GetSequence() != 0 {
					return m
				}
				continue
			default:
			}
			t.Fatalf("stream ended while waiting for an event: %v", f.err)
		case <-timeout:
			t.Fatalf("no event within %s", waitFor)
		}
	}
}

// beat waits for a heartbeat frame (no sequence).
func nextBeat[T sequenced](t *testing.T, f *streamFrames[T]) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case m := <-f.ch:
			if m.GetSequence() == 0 {
				return
			}
		case <-f.done:
			t.Fatalf("stream ended while waiting for a heartbeat: %v", f.err)
		case <-timeout:
			t.Fatalf("no heartbeat within %s", waitFor)
		}
	}
}

// quiet asserts no event frame arrives for d.
func noEvent[T sequenced](t *testing.T, f *streamFrames[T], d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case m := <-f.ch:
			if m.GetSequence() != 0 {
				t.Fatalf("unexpected event %s", prototext.Format(m))
			}
		case <-timeout:
			return
		}
	}
}

// ended waits for the stream's end and returns its error.
func (f *streamFrames[T]) ended(t *testing.T) error {
	t.Helper()
	select {
	case <-f.done:
		return f.err
	case <-time.After(waitFor):
		t.Fatalf("stream still open after %s", waitFor)
	}
	return nil
}

type apiStreams struct {
	msgs   *streamFrames[*imessagev1.SubscribeMessageEventsResponse]
	groups *streamFrames[*imessagev1.SubscribeGroupEventsResponse]
	chats  *streamFrames[*imessagev1.SubscribeChatEventsResponse]
	polls  *streamFrames[*imessagev1.SubscribePollEventsResponse]
}

// subscribeAll opens the four live streams and waits until each is open
// (its first heartbeat), so events stored afterwards reach them.
func subscribeAll(t *testing.T, cc *grpc.ClientConn, ctx context.Context) apiStreams {
	t.Helper()
	var s apiStreams
	ms, err := imessagev1.NewMessageServiceClient(cc).SubscribeMessageEvents(ctx, &imessagev1.SubscribeMessageEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	gs, err := imessagev1.NewGroupServiceClient(cc).SubscribeGroupEvents(ctx, &imessagev1.SubscribeGroupEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := imessagev1.NewChatServiceClient(cc).SubscribeChatEvents(ctx, &imessagev1.SubscribeChatEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := imessagev1.NewPollServiceClient(cc).SubscribePollEvents(ctx, &imessagev1.SubscribePollEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.msgs, s.groups, s.chats, s.polls = collectFrames(t, ms), collectFrames(t, gs), collectFrames(t, cs), collectFrames(t, ps)
	nextBeat(t, s.msgs)
	nextBeat(t, s.groups)
	nextBeat(t, s.chats)
	nextBeat(t, s.polls)
	return s
}

// catchUp runs CatchUpEvents (after nil: no cursor) to its end and returns
// the event frames, the complete frame's head and the stream's error (nil
// for an OK end).
func runCatchUp(t *testing.T, cc *grpc.ClientConn, ctx context.Context, after *uint64) ([]*imessagev1.CatchUpEventsResponse, uint64, error) {
	t.Helper()
	st, err := imessagev1.NewEventServiceClient(cc).CatchUpEvents(ctx, &imessagev1.CatchUpEventsRequest{AfterSequence: after})
	if err != nil {
		t.Fatal(err)
	}
	var evs []*imessagev1.CatchUpEventsResponse
	var head uint64
	completed := false
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if !completed {
				t.Fatal("catch-up ended without complete")
			}
			return evs, head, nil
		}
		if err != nil {
			return evs, head, err
		}
		switch {
		case completed:
			t.Fatalf("a frame after complete: %s", prototext.Format(m))
		case m.GetComplete() != nil:
			if m.Sequence != nil {
				t.Fatalf("complete carries a sequence: %s", prototext.Format(m))
			}
			completed, head = true, m.GetComplete().GetHeadSequence()
		case m.GetHeartbeat() != nil:
		default:
			evs = append(evs, m)
		}
	}
}

func wantProto(t *testing.T, what string, got, want proto.Message) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("%s:\n got %s\nwant %s", what, prototext.Format(got), prototext.Format(want))
	}
}

// dialWindow is dial with fixed flow-control windows of window bytes (no
// BDP growth), so a client that does not read stops the relay's sends.
func dialWindow(t *testing.T, srv *Server, window int32) *grpc.ClientConn {
	return dialAddr(t, srv, srv.GRPCAddr(), grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(window))
}

func evTS(minute int) *timestamppb.Timestamp { return timestamppb.New(evTime(minute)) }

func evAddr(h string) *imessagev1.SingleServiceAddressInfo {
	return &imessagev1.SingleServiceAddressInfo{Address: h, Service: imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE}
}

// Each agent event kind reaches the right stream as the right frame, with
// every field the SDK requires; kinds without a platform event (delivered,
// sent, failed, typing, history) reach none.
func TestPlatformEventKinds(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := connectEvAgent(t, srv, evLine)
	cc := dial(t, srv)
	s := subscribeAll(t, cc, apiCtx(t, newAPIToken(t, srv, evLine)))

	const dm, group = "any;-;" + evPeer, "any;+;chat123456"
	const in, ours = "G-IN", "G-OURS"
	tapback := func(minute int, name, emoji string, removed bool) *linev1.Event {
		return &linev1.Event{ChatGuid: evDM, MessageGuid: "G-TB-" + name, Date: evTS(minute), Payload: &linev1.Event_Tapback{Tapback: &linev1.TapbackEvent{
			TargetMessageGuid: ours, Part: 1, Tapback: name, Emoji: emoji, Removed: removed, Sender: evPeer}}}
	}
	groupEv := func(minute int, g *linev1.GroupEvent) *linev1.Event {
		return &linev1.Event{ChatGuid: evGroup, MessageGuid: fmt.Sprintf("G-GR-%d", minute), Date: evTS(minute), Payload: &linev1.Event_Group{Group: g}}
	}
	a.emit(
		&linev1.Event{ChatGuid: evDM, MessageGuid: in, Date: evTS(1), Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{
			Text: "hello @you", Sender: evPeer, Service: "iMessage", Effect: "slam", Subject: "re",
			ReplyTo: &linev1.ReplyTo{MessageGuid: "G-EARLIER"},
			Runs:    []*linev1.TextRun{{Start: 6, Length: 4, Mention: "+1 555 000 0001"}},
			Attachments: []*linev1.Attachment{{Guid: "AT-1", Path: "/Users/me/Library/Messages/Attachments/ab/photo.heic", MimeType: "image/heic",
				Size: 1234, TransferState: 5}},
		}}},
		&linev1.Event{ChatGuid: evDM, MessageGuid: ours, Date: evTS(2), Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{
			Text: "sent by us", Sender: evLine, FromMe: true, Service: "iMessage"}}, Key: ours + "/message/0"},
		&linev1.Event{ChatGuid: evDM, MessageGuid: ours, Date: evTS(3), Payload: &linev1.Event_Delivered{Delivered: &linev1.DeliveredEvent{}}},
		&linev1.Event{ChatGuid: evDM, MessageGuid: ours, Date: evTS(3), Payload: &linev1.Event_Sent{Sent: &linev1.SentEvent{}}},
		&linev1.Event{ChatGuid: evDM, MessageGuid: ours, Date: evTS(3), Payload: &linev1.Event_Typing{Typing: &linev1.TypingEvent{On: true}}},
		&linev1.Event{ChatGuid: evDM, MessageGuid: "G-OLD", Date: evTS(3), Historical: true, Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{Text: "history", Sender: evPeer}}},
		&linev1.Event{ChatGuid: evDM, MessageGuid: ours, Date: evTS(4), Payload: &linev1.Event_Edited{Edited: &linev1.EditedEvent{Text: "edited by us"}}},
		&linev1.Event{ChatGuid: evDM, MessageGuid: ours, Date: evTS(5), Payload: &linev1.Event_Read{Read: &linev1.ReadEvent{FromMe: true}}},
		&linev1.Event{ChatGuid: evDM, MessageGuid: in, Date: evTS(6), Payload: &linev1.Event_Read{Read: &linev1.ReadEvent{}}},
		tapback(7, "love", "", false),
		tapback(8, "emoji", "🎉", true),
		tapback(9, "sticker_placed", "", false),
		&linev1.Event{ChatGuid: evDM, MessageGuid: ours, Date: evTS(10), Payload: &linev1.Event_Unsent{Unsent: &linev1.UnsentEvent{}}},
		groupEv(11, &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_RENAMED, Name: "Team", Actor: evPeer}),
		groupEv(12, &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_PARTICIPANT_ADDED, Handle: "Bob@Example.com", Actor: evPeer}),
		groupEv(13, &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_PARTICIPANT_REMOVED, Handle: "bob@example.com", Actor: evPeer}),
		groupEv(14, &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_PARTICIPANT_LEFT, Actor: evPeer}),
		groupEv(15, &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_ICON_SET, Actor: evLine}),
		groupEv(16, &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_BACKGROUND_SET, Actor: evLine}),
		groupEv(17, &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_PARTICIPANT_LEFT, Handle: evLine, Actor: evLine}),
	)

	msg := func(e *imessagev1.MessageChangeEvent) *imessagev1.MessageChangeEvent {
		e.ChatGuid = dm
		return e
	}
	wantMsgs := []*imessagev1.MessageChangeEvent{
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(1), Actor: evAddr(evPeer), Change: &imessagev1.MessageChangeEvent_MessageReceived{MessageReceived: &imessagev1.MessageReceived{
			Message: &imessagev1.Message{
				Guid: in, DateCreated: evTS(1), Sender: evAddr(evPeer), Subject: proto.String("re"), ChatGuids: []string{dm},
				ReplyTargetGuid: proto.String("G-EARLIER"), ThreadOriginatorGuid: proto.String("G-EARLIER"), DestinationCallerId: proto.String(evLine),
				Content: &imessagev1.MessageContent{
					Text:                  proto.String("hello @you"),
					ExpressiveSendStyleId: proto.String("com.apple.MobileSMS.expressivesend.impact"),
					Mentions:              []*imessagev1.MessageMention{{Address: evLine, Start: 6, Length: 4}},
					Attachments: []*imessagev1.AttachmentInfo{{Guid: "AT-1", FileName: "photo.heic", MimeType: "image/heic", TotalBytes: 1234,
						TransferState: imessagev1.TransferState_TRANSFER_STATE_FINISHED}},
				},
			}}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(2), Actor: evAddr(evLine), IsFromMe: true, Change: &imessagev1.MessageChangeEvent_MessageReceived{MessageReceived: &imessagev1.MessageReceived{
			Message: &imessagev1.Message{Guid: ours, DateCreated: evTS(2), Sender: evAddr(evLine), IsFromMe: true, ChatGuids: []string{dm}, DestinationCallerId: proto.String(evLine),
				Content: &imessagev1.MessageContent{Text: proto.String("sent by us")}},
		}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(4), Actor: evAddr(evLine), IsFromMe: true, Change: &imessagev1.MessageChangeEvent_MessageEdited{MessageEdited: &imessagev1.MessageEdited{
			MessageGuid: ours, Content: &imessagev1.MessageContent{Text: proto.String("edited by us")}, EditedAt: evTS(4)}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(5), Actor: evAddr(evPeer), Change: &imessagev1.MessageChangeEvent_MessageRead{MessageRead: &imessagev1.MessageRead{
			MessageGuid: ours, ReadAt: evTS(5)}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(6), Actor: evAddr(evLine), IsFromMe: true, Change: &imessagev1.MessageChangeEvent_MessageRead{MessageRead: &imessagev1.MessageRead{
			MessageGuid: in, ReadAt: evTS(6)}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(7), Actor: evAddr(evPeer), Change: &imessagev1.MessageChangeEvent_ReactionAdded{ReactionAdded: &imessagev1.MessageReactionAdded{
			MessageGuid: ours, TargetPartIndex: proto.Int32(1), Reaction: &imessagev1.MessageReaction{Kind: imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LOVE}}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(8), Actor: evAddr(evPeer), Change: &imessagev1.MessageChangeEvent_ReactionRemoved{ReactionRemoved: &imessagev1.MessageReactionRemoved{
			MessageGuid: ours, TargetPartIndex: proto.Int32(1), Reaction: &imessagev1.MessageReaction{Kind: imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_EMOJI, Emoji: proto.String("🎉")}}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(9), Actor: evAddr(evPeer), Change: &imessagev1.MessageChangeEvent_StickerPlaced{StickerPlaced: &imessagev1.StickerPlaced{
			MessageGuid: ours, TargetPartIndex: proto.Int32(1)}}}),
		msg(&imessagev1.MessageChangeEvent{OccurredAt: evTS(10), Actor: evAddr(evLine), IsFromMe: true, Change: &imessagev1.MessageChangeEvent_MessageUnsent{MessageUnsent: &imessagev1.MessageUnsent{
			MessageGuid: ours, RetractedAt: evTS(10)}}}),
	}
	wantGroups := []*imessagev1.GroupChangeEvent{
		{ChatGuid: group, OccurredAt: evTS(11), Actor: evAddr(evPeer), Change: &imessagev1.GroupChangeEvent_DisplayNameChanged{DisplayNameChanged: &imessagev1.GroupDisplayNameChanged{DisplayName: "Team"}}},
		{ChatGuid: group, OccurredAt: evTS(12), Actor: evAddr(evPeer), Change: &imessagev1.GroupChangeEvent_ParticipantAdded{ParticipantAdded: &imessagev1.GroupParticipantAdded{Participant: evAddr("bob@example.com")}}},
		{ChatGuid: group, OccurredAt: evTS(13), Actor: evAddr(evPeer), Change: &imessagev1.GroupChangeEvent_ParticipantRemoved{ParticipantRemoved: &imessagev1.GroupParticipantRemoved{Participant: evAddr("bob@example.com")}}},
		{ChatGuid: group, OccurredAt: evTS(14), Actor: evAddr(evPeer), Change: &imessagev1.GroupChangeEvent_ParticipantLeft{ParticipantLeft: &imessagev1.GroupParticipantLeft{Participant: evAddr(evPeer)}}},
		{ChatGuid: group, OccurredAt: evTS(15), Actor: evAddr(evLine), IsFromMe: true, Change: &imessagev1.GroupChangeEvent_IconChanged{IconChanged: &imessagev1.GroupIconChanged{}}},
		{ChatGuid: group, OccurredAt: evTS(17), Actor: evAddr(evLine), IsFromMe: true, Change: &imessagev1.GroupChangeEvent_ParticipantLeft{ParticipantLeft: &imessagev1.GroupParticipantLeft{Participant: evAddr(evLine)}}},
	}
	wantChats := []*imessagev1.ChatChangeEvent{
		{ChatGuid: group, OccurredAt: evTS(16), Actor: evAddr(evLine), IsFromMe: true, Change: &imessagev1.ChatChangeEvent_BackgroundChanged{BackgroundChanged: &imessagev1.ChatBackgroundChanged{}}},
	}

	var last uint64
	seqs := map[uint64]bool{}
	check := func(seq uint64) {
		if seq == 0 || seqs[seq] {
			t.Fatalf("sequence %d: zero or shared by two events", seq)
		}
		seqs[seq] = true
	}
	for i, want := range wantMsgs {
		f := nextEvent(t, s.msgs)
		check(f.GetSequence())
		if f.GetSequence() <= last {
			t.Fatalf("message frame %d: sequence %d after %d", i, f.GetSequence(), last)
		}
		last = f.GetSequence()
		wantProto(t, fmt.Sprintf("message event %d", i), f.GetMessageChanged(), want)
	}
	last = 0
	for i, want := range wantGroups {
		f := nextEvent(t, s.groups)
		check(f.GetSequence())
		if f.GetSequence() <= last {
			t.Fatalf("group frame %d: sequence %d after %d", i, f.GetSequence(), last)
		}
		last = f.GetSequence()
		wantProto(t, fmt.Sprintf("group event %d", i), f.GetGroupChanged(), want)
	}
	for i, want := range wantChats {
		f := nextEvent(t, s.chats)
		check(f.GetSequence())
		wantProto(t, fmt.Sprintf("chat event %d", i), f.GetChatChanged(), want)
	}
	noEvent(t, s.msgs, 100*time.Millisecond)
	noEvent(t, s.groups, 0)
	noEvent(t, s.chats, 0)
	noEvent(t, s.polls, 0)

	// Catch-up from the start replays the same events, in one sequence.
	evs, head, err := runCatchUp(t, cc, apiCtx(t, newAPIToken(t, srv, evLine)), proto.Uint64(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(wantMsgs)+len(wantGroups)+len(wantChats) {
		t.Fatalf("catch-up replayed %d events, want %d", len(evs), len(wantMsgs)+len(wantGroups)+len(wantChats))
	}
	var mi, gi int
	last = 0
	for _, e := range evs {
		if e.GetSequence() <= last || !seqs[e.GetSequence()] {
			t.Fatalf("catch-up sequence %d after %d (live sequences %v)", e.GetSequence(), last, seqs)
		}
		last = e.GetSequence()
		switch {
		case e.GetMessageChanged() != nil:
			wantProto(t, "replayed message event", e.GetMessageChanged(), wantMsgs[mi])
			mi++
		case e.GetGroupChanged() != nil:
			wantProto(t, "replayed group event", e.GetGroupChanged(), wantGroups[gi])
			gi++
		default:
			wantProto(t, "replayed chat event", e.GetChatChanged(), wantChats[0])
		}
	}
	if head < last {
		t.Fatalf("head %d below the last event %d", head, last)
	}
}

// renderEvent refuses an event it cannot render whole; kinds with no
// platform event are errNoPlatformEvent.
func TestRenderEventRefusesPartialEvents(t *testing.T) {
	at := evTime(0)
	msg := func(mutate func(*linev1.Event)) *linev1.Event {
		ev := textEvent(evDM, "G1", "hi")
		ev.Line = evLine
		mutate(ev)
		return ev
	}
	tb := func(t *linev1.TapbackEvent) func(*linev1.Event) {
		return func(ev *linev1.Event) { ev.Payload = &linev1.Event_Tapback{Tapback: t} }
	}
	grp := func(g *linev1.GroupEvent) func(*linev1.Event) {
		return func(ev *linev1.Event) {
			ev.ChatGuid = evGroup
			ev.Payload = &linev1.Event_Group{Group: g}
		}
	}
	malformed := map[string]*linev1.Event{
		"no chat":                 msg(func(ev *linev1.Event) { ev.ChatGuid = "" }),
		"bad chat":                msg(func(ev *linev1.Event) { ev.ChatGuid = "not a guid" }),
		"no message guid":         msg(func(ev *linev1.Event) { ev.MessageGuid = "" }),
		"no payload":              msg(func(ev *linev1.Event) { ev.Payload = nil }),
		"tapback without target":  msg(tb(&linev1.TapbackEvent{Tapback: "love", Sender: evPeer})),
		"tapback without reactor": msg(tb(&linev1.TapbackEvent{Tapback: "love", TargetMessageGuid: "G0"})),
		"unknown tapback":         msg(tb(&linev1.TapbackEvent{Tapback: "wink", TargetMessageGuid: "G0", Sender: evPeer})),
		"emoji tapback, no emoji": msg(tb(&linev1.TapbackEvent{Tapback: "emoji", TargetMessageGuid: "G0", Sender: evPeer})),
		"edit without guid": msg(func(ev *linev1.Event) {
			ev.MessageGuid, ev.Payload = "", &linev1.Event_Edited{Edited: &linev1.EditedEvent{}}
		}),
		"group change in a DM": msg(func(ev *linev1.Event) {
			ev.Payload = &linev1.Event_Group{Group: &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_RENAMED}}
		}),
		"participant added, nobody": msg(grp(&linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_PARTICIPANT_ADDED, Actor: evPeer})),
		"unknown group action":      msg(grp(&linev1.GroupEvent{Actor: evPeer})),
	}
	for name, ev := range malformed {
		pe, err := renderEvent(ev, at, nil)
		if err == nil || errors.Is(err, errNoPlatformEvent) {
			t.Errorf("%s: rendered (%v) as %+v", name, err, pe)
		}
	}
	// Whatever builds an event, wholeEvent stops one short of the SDK's needs.
	partial := map[string]platformEvent{
		"no occurred_at": {message: &imessagev1.MessageChangeEvent{ChatGuid: "any;-;" + evPeer,
			Change: &imessagev1.MessageChangeEvent_MessageRead{MessageRead: &imessagev1.MessageRead{MessageGuid: "G", ReadAt: evTS(1)}}}},
		"no read_at": {message: &imessagev1.MessageChangeEvent{ChatGuid: "any;-;" + evPeer, OccurredAt: evTS(1),
			Change: &imessagev1.MessageChangeEvent_MessageRead{MessageRead: &imessagev1.MessageRead{MessageGuid: "G"}}}},
		"no content": {message: &imessagev1.MessageChangeEvent{ChatGuid: "any;-;" + evPeer, OccurredAt: evTS(1),
			Change: &imessagev1.MessageChangeEvent_MessageReceived{MessageReceived: &imessagev1.MessageReceived{Message: &imessagev1.Message{Guid: "G", DateCreated: evTS(1)}}}}},
		"no date_created": {message: &imessagev1.MessageChangeEvent{ChatGuid: "any;-;" + evPeer, OccurredAt: evTS(1),
			Change: &imessagev1.MessageChangeEvent_MessageReceived{MessageReceived: &imessagev1.MessageReceived{Message: &imessagev1.Message{Guid: "G", Content: &imessagev1.MessageContent{}}}}}},
		"no edited_at": {message: &imessagev1.MessageChangeEvent{ChatGuid: "any;-;" + evPeer, OccurredAt: evTS(1),
			Change: &imessagev1.MessageChangeEvent_MessageEdited{MessageEdited: &imessagev1.MessageEdited{MessageGuid: "G", Content: &imessagev1.MessageContent{}}}}},
		"no retracted_at": {message: &imessagev1.MessageChangeEvent{ChatGuid: "any;-;" + evPeer, OccurredAt: evTS(1),
			Change: &imessagev1.MessageChangeEvent_MessageUnsent{MessageUnsent: &imessagev1.MessageUnsent{MessageGuid: "G"}}}},
		"no reaction": {message: &imessagev1.MessageChangeEvent{ChatGuid: "any;-;" + evPeer, OccurredAt: evTS(1), Actor: evAddr(evPeer),
			Change: &imessagev1.MessageChangeEvent_ReactionAdded{ReactionAdded: &imessagev1.MessageReactionAdded{MessageGuid: "G"}}}},
		"iMessage guid": {message: &imessagev1.MessageChangeEvent{ChatGuid: evDM, OccurredAt: evTS(1),
			Change: &imessagev1.MessageChangeEvent_MessageRead{MessageRead: &imessagev1.MessageRead{MessageGuid: "G", ReadAt: evTS(1)}}}},
		"group event in a DM guid": {group: &imessagev1.GroupChangeEvent{ChatGuid: "any;-;" + evPeer, OccurredAt: evTS(1),
			Change: &imessagev1.GroupChangeEvent_IconChanged{IconChanged: &imessagev1.GroupIconChanged{}}}},
		"nothing": {},
	}
	for name, pe := range partial {
		if err := wholeEvent(pe); err == nil {
			t.Errorf("%s: passed wholeEvent", name)
		}
	}
	// An event without a date takes the time the relay received it.
	ev := msg(func(ev *linev1.Event) { ev.Date = nil })
	pe, err := renderEvent(ev, at, nil)
	if err != nil || !pe.message.GetOccurredAt().AsTime().Equal(at) || !pe.message.GetMessageReceived().GetMessage().GetDateCreated().AsTime().Equal(at) {
		t.Fatalf("undated event: %v %v", pe.message, err)
	}
}

// A malformed event is logged and skipped, live and in catch-up, and the
// next one is delivered: one bad event never wedges the SDK's stream.
func TestPlatformMalformedEventSkipped(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := connectEvAgent(t, srv, evLine)
	cc := dial(t, srv)
	tok := newAPIToken(t, srv, evLine)
	s := subscribeAll(t, cc, apiCtx(t, tok))
	a.emit(
		&linev1.Event{ChatGuid: evDM, MessageGuid: "G-BAD", Date: evTS(1), Payload: &linev1.Event_Tapback{Tapback: &linev1.TapbackEvent{Tapback: "love", Sender: evPeer}}},
		&linev1.Event{ChatGuid: "garbage", MessageGuid: "G-BAD2", Date: evTS(1), Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{Text: "x"}}},
		textEvent(evDM, "G-GOOD", "after the bad ones"),
	)
	f := nextEvent(t, s.msgs)
	if g := f.GetMessageChanged().GetMessageReceived().GetMessage().GetGuid(); g != "G-GOOD" {
		t.Fatalf("first delivered event is %q", g)
	}
	if f.GetSequence() != 3 {
		t.Fatalf("the good event has sequence %d, want 3 (the bad ones keep theirs)", f.GetSequence())
	}
	evs, _, err := runCatchUp(t, cc, apiCtx(t, tok), proto.Uint64(0))
	if err != nil || len(evs) != 1 || evs[0].GetMessageChanged().GetMessageReceived().GetMessage().GetGuid() != "G-GOOD" {
		t.Fatalf("catch-up: %v %v", evs, err)
	}
}

// Sequences strictly increase across a relay restart on the same data dir,
// and a cursor from before the restart catches up exactly the events after
// it, for the token's own lines only, then complete{head} and the end.
func TestPlatformSequencesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	srv1 := startRelay(t, dir, Options{})
	a := connectEvAgent(t, srv1, evLine)
	b := connectEvAgent(t, srv1, evLine2)
	tok := newAPIToken(t, srv1, evLine)
	pool := newAPIToken(t, srv1, evLine, evLine2)
	cc := dial(t, srv1)
	s := subscribeAll(t, cc, apiCtx(t, tok))
	a.emit(textEvent(evDM, "A1", "a1"))
	b.emit(textEvent(evDM, "B1", "b1"))
	a.emit(textEvent(evDM, "A2", "a2"))
	first := nextEvent(t, s.msgs)
	cursor := nextEvent(t, s.msgs).GetSequence()
	if first.GetSequence() >= cursor {
		t.Fatalf("sequences %d then %d", first.GetSequence(), cursor)
	}
	a.close()
	b.close()
	cc.Close()
	if err := s.msgs.ended(t); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Logf("stream end: %v", err)
	}
	if err := srv1.Close(); err != nil {
		t.Fatal(err)
	}

	srv2 := startRelay(t, dir, Options{})
	a.redial(srv2)
	a.connect()
	b.redial(srv2)
	b.connect()
	cc2 := dial(t, srv2)
	s2 := subscribeAll(t, cc2, apiCtx(t, tok))
	// While the app was away: A3 and B2; then, live, A4.
	a.emit(textEvent(evDM, "A3", "a3"))
	b.emit(textEvent(evDM, "B2", "b2"))
	got := nextEvent(t, s2.msgs)
	if got.GetSequence() <= cursor {
		t.Fatalf("after the restart a live event has sequence %d, at or below the cursor %d", got.GetSequence(), cursor)
	}
	evs, head, err := runCatchUp(t, cc2, apiCtx(t, tok), proto.Uint64(cursor))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].GetMessageChanged().GetMessageReceived().GetMessage().GetGuid() != "A3" || evs[0].GetSequence() != got.GetSequence() {
		t.Fatalf("catch-up after %d: %v", cursor, evs)
	}
	if head < got.GetSequence() {
		t.Fatalf("head %d below the last event %d", head, got.GetSequence())
	}
	a.emit(textEvent(evDM, "A4", "a4"))
	if f := nextEvent(t, s2.msgs); f.GetSequence() <= head || f.GetMessageChanged().GetMessageReceived().GetMessage().GetGuid() != "A4" {
		t.Fatalf("live after catch-up: %s (head %d)", prototext.Format(f), head)
	}
	// A pool token sees both lines' events.
	evs, _, err = runCatchUp(t, cc2, apiCtx(t, pool), proto.Uint64(cursor))
	if err != nil {
		t.Fatal(err)
	}
	var guids []string
	for _, e := range evs {
		guids = append(guids, e.GetMessageChanged().GetMessageReceived().GetMessage().GetGuid())
	}
	if strings.Join(guids, ",") != "A3,B2,A4" {
		t.Fatalf("pool catch-up after %d: %v", cursor, guids)
	}
	// A cursor beyond the head is from another log: refused, so the SDK
	// drops it instead of silently dropping every live event below it.
	if _, _, err := runCatchUp(t, cc2, apiCtx(t, tok), proto.Uint64(head+1000)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("cursor ahead of the head: %v", err)
	}
}

// Events older than the retention are pruned by the sweeper; a cursor
// whose events were pruned gets FAILED_PRECONDITION, a later one (or none)
// still catches up.
func TestPlatformCatchUpRetention(t *testing.T) {
	clock := &testClock{}
	srv := startRelay(t, "", Options{Now: clock.Now, EventRetention: time.Hour})
	a := connectEvAgent(t, srv, evLine)
	b := connectEvAgent(t, srv, evLine2)
	a.emit(textEvent(evDM, "OLD1", "old"), textEvent(evDM, "OLD2", "old"))
	b.emit(textEvent(evDM, "B-OLD", "old, another line"))
	clock.Advance(2 * time.Hour)
	a.emit(textEvent(evDM, "NEW", "new"))
	eventually(t, "old events pruned", func() bool {
		var n int
		if err := srv.store.db.QueryRow(`SELECT COUNT(*) FROM events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	})
	cc := dial(t, srv)
	ctx := apiCtx(t, newAPIToken(t, srv, evLine))
	for _, cursor := range []uint64{0, 1} {
		if _, _, err := runCatchUp(t, cc, ctx, proto.Uint64(cursor)); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("cursor %d past the retention: %v", cursor, err)
		}
	}
	for _, cursor := range []*uint64{proto.Uint64(2), proto.Uint64(3), nil} {
		evs, _, err := runCatchUp(t, cc, ctx, cursor)
		if err != nil || len(evs) != 1 || evs[0].GetMessageChanged().GetMessageReceived().GetMessage().GetGuid() != "NEW" {
			t.Fatalf("cursor %v within the retention: %v %v", cursor, evs, err)
		}
	}
	// Line 2 lost only its own event: its cursor 3 is still good.
	if _, _, err := runCatchUp(t, cc, apiCtx(t, newAPIToken(t, srv, evLine2)), proto.Uint64(3)); err != nil {
		t.Fatalf("line 2 from 3: %v", err)
	}
	if p := getEvents(t, srv, "after=0"); len(p.Events) != 1 {
		t.Fatalf("operator API still lists %d events", len(p.Events))
	}
}

// Every live stream gets heartbeats, idle or not, and a revoked token ends
// them at the next one.
func TestPlatformHeartbeats(t *testing.T) {
	srv := startRelay(t, "", Options{EventHeartbeat: 50 * time.Millisecond})
	tok, id, err := srv.CreateAPIToken(context.Background(), []string{evLine}, false)
	if err != nil {
		t.Fatal(err)
	}
	s := subscribeAll(t, dial(t, srv), apiCtx(t, tok))
	for range 3 {
		nextBeat(t, s.msgs)
		nextBeat(t, s.groups)
		nextBeat(t, s.chats)
		nextBeat(t, s.polls)
	}
	if err := srv.store.revokeAPIToken(context.Background(), id, srv.now()); err != nil {
		t.Fatal(err)
	}
	for name, end := range map[string]func(*testing.T) error{
		"message": s.msgs.ended, "group": s.groups.ended, "chat": s.chats.ended, "poll": s.polls.ended,
	} {
		if err := end(t); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s stream after revocation: %v", name, err)
		}
	}
}

// A wrong token gets UNAUTHENTICATED on every event stream.
func TestPlatformEventStreamsRefuseWrongToken(t *testing.T) {
	srv := startRelay(t, "", Options{})
	cc := dial(t, srv)
	ctx := apiCtx(t, "lrk_not-a-token")
	open := map[string]func() error{
		"message": func() error {
			st, err := imessagev1.NewMessageServiceClient(cc).SubscribeMessageEvents(ctx, &imessagev1.SubscribeMessageEventsRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
		"group": func() error {
			st, err := imessagev1.NewGroupServiceClient(cc).SubscribeGroupEvents(ctx, &imessagev1.SubscribeGroupEventsRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
		"chat": func() error {
			st, err := imessagev1.NewChatServiceClient(cc).SubscribeChatEvents(ctx, &imessagev1.SubscribeChatEventsRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
		"poll": func() error {
			st, err := imessagev1.NewPollServiceClient(cc).SubscribePollEvents(ctx, &imessagev1.SubscribePollEventsRequest{})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
		"catch-up": func() error {
			st, err := imessagev1.NewEventServiceClient(cc).CatchUpEvents(ctx, &imessagev1.CatchUpEventsRequest{AfterSequence: proto.Uint64(0)})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		},
	}
	for name, f := range open {
		if err := f(); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A subscriber that stops reading holds up neither the agent nor another
// subscriber, and is cut with RESOURCE_EXHAUSTED once its frames wait
// longer than EventSendTimeout.
func TestPlatformSlowSubscriberIsCut(t *testing.T) {
	srv := startRelay(t, "", Options{EventSendTimeout: 300 * time.Millisecond})
	a := connectEvAgent(t, srv, evLine)
	tok := newAPIToken(t, srv, evLine)
	// The stalled client: fixed 64 KiB windows (no BDP growth), and it
	// never reads until the end.
	stalledCC := dialWindow(t, srv, 64<<10)
	stalled, err := imessagev1.NewMessageServiceClient(stalledCC).SubscribeMessageEvents(apiCtx(t, tok), &imessagev1.SubscribeMessageEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stalled.Recv(); err != nil || m.GetHeartbeat() == nil {
		t.Fatalf("first frame %v %v", m, err)
	}
	good := subscribeAll(t, dial(t, srv), apiCtx(t, tok))
	big := strings.Repeat("x", 16<<10)
	const n = 200
	for i := range n {
		a.emit(textEvent(evDM, fmt.Sprintf("BIG%03d", i), big))
	}
	for i := range n {
		if g := nextEvent(t, good.msgs).GetMessageChanged().GetMessageReceived().GetMessage().GetGuid(); g != fmt.Sprintf("BIG%03d", i) {
			t.Fatalf("the reading subscriber got %s as event %d", g, i)
		}
	}
	// Now read the stalled one: what was sent, then the cut.
	for {
		_, err := stalled.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stalled stream ended with %v", err)
		}
		break
	}
}

// Migration 4 gives events stored before it their line: the event's own,
// else that of an agent holding exactly one line.
func TestMigrationBackfillsEventLines(t *testing.T) {
	dir := t.TempDir()
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, dbFile)+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{schema}
	for _, m := range migrations[:2] {
		stmts = append(stmts, m.sqlite)
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
	mustExec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustExec(`PRAGMA user_version = 3`)
	for _, id := range []string{"agt_one", "agt_two"} {
		mustExec(`INSERT INTO agents(id, secret_hash, enrolled_at) VALUES(?, 'h', 0)`, id)
	}
	mustExec(`INSERT INTO line_bindings(line_key, line, agent_id, bound_at) VALUES(?, ?, 'agt_one', 0)`, evLine, evLine)
	mustExec(`INSERT INTO line_bindings(line_key, line, agent_id, bound_at) VALUES(?, ?, 'agt_two', 0), (?, ?, 'agt_two', 0)`, evLine2, evLine2, "+15550000003", "+15550000003")
	stored := []struct {
		agent, line string
	}{{"agt_one", "+1 (555) 000-0001"}, {"agt_one", ""}, {"agt_two", evLine2}, {"agt_two", ""}}
	for i, e := range stored {
		b, _ := proto.Marshal(&linev1.Event{Sequence: uint64(i + 1), Line: e.line, ChatGuid: evDM, MessageGuid: fmt.Sprint(i)})
		mustExec(`INSERT INTO events(agent_id, agent_seq, key, event, received_at) VALUES(?, ?, ?, ?, 0)`, e.agent, i+1, fmt.Sprint(i), b)
	}
	db.Close()

	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	rows, err := st.db.Query(`SELECT line_key FROM events ORDER BY relay_seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		got = append(got, k)
	}
	if want := []string{evLine, evLine, evLine2, ""}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("line keys %q, want %q", got, want)
	}
}

// A Subscribe request's chat_guid narrows the stream to that chat, in any
// spelling; one that is not a chat GUID is INVALID_ARGUMENT.
func TestPlatformSubscribeOneChat(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := connectEvAgent(t, srv, evLine)
	cc := dial(t, srv)
	ctx := apiCtx(t, newAPIToken(t, srv, evLine))
	msgs := imessagev1.NewMessageServiceClient(cc)
	st, err := msgs.SubscribeMessageEvents(ctx, &imessagev1.SubscribeMessageEventsRequest{ChatGuid: proto.String("any;-;+1 555 765 4321")})
	if err != nil {
		t.Fatal(err)
	}
	f := collectFrames(t, st)
	nextBeat(t, f)
	a.emit(textEvent("iMessage;-;+15550009999", "OTHER", "another chat"), textEvent(evDM, "MINE", "this chat"))
	if g := nextEvent(t, f).GetMessageChanged().GetMessageReceived().GetMessage().GetGuid(); g != "MINE" {
		t.Fatalf("filtered stream delivered %s", g)
	}
	bad, err := msgs.SubscribeMessageEvents(ctx, &imessagev1.SubscribeMessageEventsRequest{ChatGuid: proto.String("nonsense")})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad chat filter: %v", err)
	}
}

// A replay longer than the heartbeat interval carries heartbeats between
// its batches, and still ends with every event and complete.
func TestPlatformLongReplayHeartbeats(t *testing.T) {
	srv := startRelay(t, "", Options{EventHeartbeat: time.Millisecond})
	a := connectEvAgent(t, srv, evLine)
	var evs []*linev1.Event
	for i := range 3*eventBatch + 1 {
		evs = append(evs, textEvent(evDM, fmt.Sprintf("R%04d", i), "replayed"))
	}
	a.emit(evs...)
	st, err := imessagev1.NewEventServiceClient(dial(t, srv)).CatchUpEvents(apiCtx(t, newAPIToken(t, srv, evLine)), &imessagev1.CatchUpEventsRequest{AfterSequence: proto.Uint64(0)})
	if err != nil {
		t.Fatal(err)
	}
	var events, beats int
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.GetHeartbeat() != nil:
			beats++
		case m.GetComplete() != nil:
			if m.GetComplete().GetHeadSequence() != uint64(len(evs)) {
				t.Fatalf("head %d, want %d", m.GetComplete().GetHeadSequence(), len(evs))
			}
		default:
			events++
		}
	}
	if events != len(evs) || beats == 0 {
		t.Fatalf("%d events (want %d), %d heartbeats", events, len(evs), beats)
	}
}
