package relay

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

func getMessageCall(c *apiClient, key, guid string) <-chan callResult {
	return startCall(func(o ...grpc.CallOption) (*imessagev1.GetMessageResponse, error) {
		return c.msgs.GetMessage(c.ctx(key), &imessagev1.GetMessageRequest{MessageGuid: guid}, o...)
	})
}

func getChatCall(c *apiClient, chat string) <-chan callResult {
	return startCall(func(o ...grpc.CallOption) (*imessagev1.GetChatResponse, error) {
		return c.chats.GetChat(c.ctx(""), &imessagev1.GetChatRequest{ChatGuid: chat}, o...)
	})
}

// storedOut is an agent's read of one of our sends, as chat.db shows it.
func storedOut(guid, text, line string) *linev1.Snapshot {
	return &linev1.Snapshot{MessageGuid: guid, StoredMessage: &linev1.StoredMessage{
		Event: &linev1.Event{Key: guid + "/message/0", Date: when, Line: line, ChatGuid: "iMessage;-;" + peer, MessageGuid: guid,
			Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{Text: text, FromMe: true, Service: "iMessage",
				ReplyTo: &linev1.ReplyTo{MessageGuid: "ORIG"}}}},
		Sent: true, Delivered: true, DateDelivered: when, DateEdited: when,
	}}
}

// Every read is its own command with a fresh id, even with a repeated
// idempotency key, so a second read is never the first one's stale answer;
// the answer is the agent's row through the event renderer.
func TestPlatformReadsAreFreshCommands(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, tokID, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	var ids []string
	for i, text := range []string{"first", "edited"} {
		ch := getMessageCall(c, "same-key", "G1")
		cmd := a.nextCommand()
		if cmd.GetGetMessage().GetMessageGuid() != "G1" || cmd.GetLine() != apiLine || !strings.HasPrefix(cmd.GetId(), readIDPrefix+tokID+":") {
			t.Fatalf("read %d: command %v", i, cmd)
		}
		if dl := cmd.GetDeadline().AsTime(); dl.After(time.Now().Add(readTimeout)) || dl.Before(time.Now()) {
			t.Errorf("read deadline %v, want within %v", dl, readTimeout)
		}
		ids = append(ids, cmd.GetId())
		a.apiSucceed(cmd.GetId(), storedOut("G1", text, apiLine))
		r := awaitCall(t, ch)
		if r.err != nil {
			t.Fatalf("read %d: %v", i, r.err)
		}
		m := r.resp.(*imessagev1.GetMessageResponse).GetMessage()
		if m.GetGuid() != "G1" || m.GetContent().GetText() != text || !m.GetIsFromMe() || !m.GetIsSent() || !m.GetIsDelivered() ||
			!m.GetDateCreated().AsTime().Equal(when.AsTime()) || m.GetDateEdited() == nil || m.GetDateDelivered() == nil ||
			len(m.GetChatGuids()) != 1 || m.GetChatGuids()[0] != dmGUID || m.GetReplyTargetGuid() != "ORIG" ||
			m.GetSender().GetAddress() != apiLine || m.GetDestinationCallerId() != apiLine {
			t.Errorf("read %d: message %v", i, m)
		}
	}
	if ids[0] == ids[1] {
		t.Fatalf("two reads shared command %s", ids[0])
	}
}

// A tapback row reads as the reaction it is; a group action as its item.
func TestPlatformReadTapbackAndGroupRows(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	ch := getMessageCall(c, "", "T1")
	cmd := a.nextCommand()
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{StoredMessage: &linev1.StoredMessage{Event: &linev1.Event{
		Key: "T1/tapback/0", Date: when, Line: apiLine, ChatGuid: "iMessage;-;" + peer, MessageGuid: "T1",
		Payload: &linev1.Event_Tapback{Tapback: &linev1.TapbackEvent{TargetMessageGuid: "M1", Part: 1, Tapback: "laugh", Sender: peer}},
	}}})
	r := awaitCall(t, ch)
	m := r.resp.(*imessagev1.GetMessageResponse).GetMessage()
	if r.err != nil || m.GetGuid() != "T1" || m.GetContent() == nil || m.GetReactionTargetGuid() != "M1" || m.GetReactionTargetPartIndex() != 1 ||
		m.GetReaction().GetKind() != imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LAUGH || !m.GetReactionSelected() ||
		m.GetSender().GetAddress() != peer || m.GetIsFromMe() || m.GetDateCreated() == nil {
		t.Fatalf("tapback row: %v %v", m, r.err)
	}
	ch = getMessageCall(c, "", "R1")
	cmd = a.nextCommand()
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{StoredMessage: &linev1.StoredMessage{Event: &linev1.Event{
		Key: "R1/group/0", Date: when, Line: apiLine, ChatGuid: "iMessage;+;chat42", MessageGuid: "R1",
		Payload: &linev1.Event_Group{Group: &linev1.GroupEvent{Action: linev1.GroupAction_GROUP_ACTION_RENAMED, Name: "Night owls", Actor: peer}},
	}}})
	r = awaitCall(t, ch)
	m = r.resp.(*imessagev1.GetMessageResponse).GetMessage()
	if r.err != nil || m.GetItemType() != imessagev1.MessageItemType_MESSAGE_ITEM_TYPE_GROUP_NAME_CHANGE || m.GetGroupTitle() != "Night owls" ||
		m.GetChatGuids()[0] != "any;+;chat42" || m.GetSender().GetAddress() != peer {
		t.Fatalf("group row: %v %v", m, r.err)
	}
}

// What the agent did not find is NOT_FOUND with the SDK's code for it; a
// message the Mac has on a line that is not the token's is not shown.
func TestPlatformReadNotFound(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)

	ch := getMessageCall(c, "", "NOPE")
	cmd := a.nextCommand()
	a.apiFail(cmd.GetId(), &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "NOT_FOUND: message NOPE is not in chat.db"})
	wantAnswer(t, awaitCall(t, ch), codes.NotFound, sdkMessageNotFound, "false", map[string]string{"message_guid": "NOPE", "command_id": cmd.GetId()})

	ch = getChatCall(c, "any;-;+15550009999")
	cmd = a.nextCommand()
	if cmd.GetChatGuid() != "any;-;+15550009999" || cmd.GetGetChat() == nil {
		t.Fatalf("get_chat command %v", cmd)
	}
	a.apiFail(cmd.GetId(), &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "NOT_FOUND: no chat iMessage;-;+15550009999 in chat.db"})
	wantAnswer(t, awaitCall(t, ch), codes.NotFound, sdkChatNotFound, "false", map[string]string{"chat_guid": "any;-;+15550009999"})

	ch = getMessageCall(c, "", "OTHER")
	cmd = a.nextCommand()
	a.apiSucceed(cmd.GetId(), storedOut("OTHER", "not yours", "+15550000042"))
	r := awaitCall(t, ch)
	wantAnswer(t, r, codes.NotFound, sdkMessageNotFound, "false", map[string]string{"message_guid": "OTHER"})
	if r.resp != nil && r.resp.(*imessagev1.GetMessageResponse).GetMessage() != nil {
		t.Fatal("another line's message was shown")
	}
}

// GetChat shows the chat the agent read: any; spelling, members, name.
func TestPlatformGetChat(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	ch := getChatCall(c, "any;+;chat42")
	cmd := a.nextCommand()
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{ChatGuid: "iMessage;+;chat42", StoredChat: &linev1.StoredChat{
		ChatGuid: "iMessage;+;chat42", ChatIdentifier: "chat42", Service: "iMessage", Group: true, DisplayName: "Team",
		Participants: []*linev1.ChatMember{{Handle: "+1 (555) 555-0123", Service: "iMessage"}, {Handle: "Bob@Example.com", Service: "iMessage"}},
	}})
	r := awaitCall(t, ch)
	ct := r.resp.(*imessagev1.GetChatResponse).GetChat()
	if r.err != nil || ct.GetGuid() != "any;+;chat42" || !ct.GetIsGroup() || ct.GetDisplayName() != "Team" || len(ct.GetParticipants()) != 2 ||
		ct.GetParticipants()[0].GetAddress() != peer || ct.GetParticipants()[1].GetAddress() != "bob@example.com" ||
		ct.GetService() != imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE {
		t.Fatalf("chat %v %v", ct, r.err)
	}
}

// A pool's GetMessage goes to the line whose events carried the message;
// one the relay has no event of is looked for on each connected Mac in the
// token's order, and only a NOT_FOUND from all of them is messageNotFound.
func TestPlatformGetMessagePoolLine(t *testing.T) {
	srv := startRelay(t, "", Options{})
	const l1, l2 = "+15550000001", "+15550000002"
	a1, a2 := enrollAgent(t, srv, l1), enrollAgent(t, srv, l2)
	a1.connect()
	a2.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{l1, l2}, true)
	c := newAPIClient(t, srv, tok)
	a2.event(1, "G2/message/0", "on line two")
	if a2.nextAck() != 1 {
		t.Fatal("event not stored")
	}

	ch := getMessageCall(c, "", "G2")
	cmd := a2.nextCommand()
	a1.noCommand(50 * time.Millisecond)
	a2.apiSucceed(cmd.GetId(), storedOut("G2", "on line two", l2))
	if r := awaitCall(t, ch); r.err != nil || r.resp.(*imessagev1.GetMessageResponse).GetMessage().GetContent().GetText() != "on line two" {
		t.Fatalf("known message: %v", r.err)
	}

	notFound := &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "message H is not in chat.db"}
	ch = getMessageCall(c, "", "H")
	cmd = a1.nextCommand()
	a2.noCommand(50 * time.Millisecond) // one line at a time, in the token's order
	a1.apiFail(cmd.GetId(), notFound)
	cmd = a2.nextCommand()
	a2.apiSucceed(cmd.GetId(), storedOut("H", "found on two", l2))
	if r := awaitCall(t, ch); r.err != nil || r.resp.(*imessagev1.GetMessageResponse).GetMessage().GetGuid() != "H" {
		t.Fatalf("searched message: %v", r.err)
	}

	ch = getMessageCall(c, "", "NOWHERE")
	a1.apiFail(a1.nextCommand().GetId(), notFound)
	a2.apiFail(a2.nextCommand().GetId(), notFound)
	wantAnswer(t, awaitCall(t, ch), codes.NotFound, sdkMessageNotFound, "false", map[string]string{"message_guid": "NOWHERE"})

	// A Mac that is away is not asked: the call does not wait for it.
	a1.close()
	eventually(t, "agent one offline", func() bool { return !srv.hub.state(a1.id).connected })
	ch = getMessageCall(c, "", "H2")
	a2.apiSucceed(a2.nextCommand().GetId(), storedOut("H2", "x", l2))
	if r := awaitCall(t, ch); r.err != nil {
		t.Fatalf("with a Mac away: %v", r.err)
	}
}

// Finished reads are deleted once past their retention; unfinished reads
// and every write stay.
func TestPruneReads(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, tokID, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	ch := getMessageCall(c, "", "G1")
	done := a.nextCommand()
	a.apiSucceed(done.GetId(), storedOut("G1", "x", apiLine))
	awaitCall(t, ch)
	getMessageCall(c, "", "G2")
	open := a.nextCommand()
	ws := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(c.ctx("w1"), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	})
	a.apiSucceed(a.nextCommand().GetId(), &linev1.Snapshot{MessageGuid: "W1", Sent: true, Date: when})
	awaitCall(t, ws)

	ctx := context.Background()
	if n, err := srv.store.pruneReads(ctx, time.Now().Add(-time.Minute), 100); err != nil || n != 0 {
		t.Fatalf("pruned %d (%v) before the retention passed", n, err)
	}
	if n, err := srv.store.pruneReads(ctx, time.Now().Add(time.Minute), 100); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want the one finished read", n, err)
	}
	for id, want := range map[string]bool{done.GetId(): false, open.GetId(): true, "api:" + tokID + ":key:w1": true} {
		r, err := srv.store.command(ctx, id)
		if err != nil || (r != nil) != want {
			t.Errorf("command %s stored %v (%v), want %v", id, r != nil, err, want)
		}
	}
	a.apiSucceed(open.GetId(), storedOut("G2", "x", apiLine))
}

// The sweeper looks for reads to prune at every turn; on SQLite that look
// walks the reads' range of the primary key, not every finished command
// (which the state index would: SQLite's planner has no statistics, and
// with thousands of commands stored the look took most of the relay's
// CPU).
func TestPruneReadsReadsOnlyTheReadsRange(t *testing.T) {
	srv := startRelay(t, "", Options{})
	if srv.store.d != sqliteDialect {
		t.Skip("PostgreSQL plans by statistics; this checks SQLite's plan")
	}
	due, args := srv.store.readsDue(time.Now())
	rows, err := srv.store.db.Query(`EXPLAIN QUERY PLAN SELECT 1 FROM commands WHERE `+due+` LIMIT 1`, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(plan) != 1 || !strings.Contains(plan[0], "sqlite_autoindex_commands_1 (id>? AND id<?)") {
		t.Fatalf("plan %q, want a search of the primary key's range alone", plan)
	}
}

// TestAgentsShowNoStreamBeforeItsHello: the agents listing reads the live
// streams before the stored rows, so an agent shown connected always
// shows what its Hello said. Read the other way round, a Hello stored and
// its stream attached between the two reads showed a new agent connected
// and healthy with the row of an agent never seen (no hostname, no lines,
// no heartbeat: once in 240 runs of an agent test on a loaded machine).
// Here readers race the connects.
func TestAgentsShowNoStreamBeforeItsHello(t *testing.T) {
	srv := startRelay(t, "", Options{})
	const n, readers = 100, 3
	agents := make([]*testAgent, n)
	for i := range agents {
		agents[i] = enrollAgent(t, srv, fmt.Sprintf("+1555000%04d", i))
	}
	stop := make(chan struct{})
	bad := make(chan string, 1)
	var reads atomic.Int64
	read := func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			as, err := srv.Agents(context.Background())
			if err != nil {
				continue
			}
			reads.Add(1)
			for _, a := range as {
				// The Hello stores last_seen; a row from before it has none.
				if a.Connected && a.LastHeartbeat == nil {
					select {
					case bad <- fmt.Sprintf("%+v", a):
					default:
					}
				}
			}
		}
	}
	var wg sync.WaitGroup
	for range readers {
		wg.Go(read)
	}
	stopReaders := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopReaders() // a failed connect ends the test: the readers too
	for _, a := range agents {
		a.connect()
	}
	stopReaders()
	select {
	case v := <-bad:
		t.Fatalf("an agent shown connected without its Hello: %s", v)
	default:
	}
	if reads.Load() == 0 {
		t.Fatal("the listing was never read while agents connected")
	}
}
