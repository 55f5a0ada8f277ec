package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// apiClient is an SDK stand-in: the generated photon.imessage.v1 clients
// over the relay's real TLS listener, with a bearer token.
type apiClient struct {
	msgs   imessagev1.MessageServiceClient
	chats  imessagev1.ChatServiceClient
	groups imessagev1.GroupServiceClient
	token  string
}

func newAPIClient(t *testing.T, srv *Server, token string) *apiClient {
	t.Helper()
	cc := dial(t, srv)
	return &apiClient{
		msgs: imessagev1.NewMessageServiceClient(cc), chats: imessagev1.NewChatServiceClient(cc),
		groups: imessagev1.NewGroupServiceClient(cc), token: token,
	}
}

// ctx is a call context with the token and, unless key is empty, the
// x-idempotency-key spectrum-ts sends on every write.
func (c *apiClient) ctx(key string) context.Context {
	kv := []string{"authorization", "Bearer " + c.token}
	if key != "" {
		kv = append(kv, idempotencyKeyHeader, key)
	}
	return metadata.AppendToOutgoingContext(context.Background(), kv...)
}

// callResult is a finished platform API call with its trailers.
type callResult struct {
	resp    proto.Message
	err     error
	trailer metadata.MD
}

// startCall runs a call in the background (it returns only with the
// command's final state) and hands over its result.
func startCall[T proto.Message](call func(...grpc.CallOption) (T, error)) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		var md metadata.MD
		resp, err := call(grpc.Trailer(&md))
		ch <- callResult{resp: resp, err: err, trailer: md}
	}()
	return ch
}

func awaitCall(t *testing.T, ch <-chan callResult) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(2 * waitFor):
		t.Fatal("the platform API call did not return")
	}
	return callResult{}
}

// stillRunning asserts the call has not returned for d.
func stillRunning(t *testing.T, ch <-chan callResult, d time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("the call returned before the command's final result: %v %v", r.resp, r.err)
	case <-time.After(d):
	}
}

func (a *testAgent) apiSucceed(id string, snap *linev1.Snapshot) {
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{
		CommandId: id, Outcome: &linev1.CommandResult_Snapshot{Snapshot: snap}, FinishedAt: timestamppb.Now(),
	}}})
}

func (a *testAgent) apiFail(id string, e *linev1.CommandError) {
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{
		CommandId: id, Outcome: &linev1.CommandResult_Error{Error: e}, FinishedAt: timestamppb.Now(),
	}}})
}

// noChatDBSpelling fails when a chat GUID in chat.db's spelling appears in
// what an SDK application would see.
func noChatDBSpelling(t *testing.T, what string, texts ...string) {
	t.Helper()
	for _, s := range texts {
		for _, bad := range []string{"iMessage;", "SMS;", "RCS;"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s shows a chat.db chat GUID (%s): %s", what, bad, s)
			}
		}
	}
}

// trailer1 is the trailer's one value, "" when it is absent.
func trailer1(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func trailerText(md metadata.MD) string {
	var b strings.Builder
	for k, vs := range md {
		b.WriteString(k + "=" + strings.Join(vs, ",") + " ")
	}
	return b.String()
}

const (
	apiLine = "+15550000001"
	peer    = "+15555550123"
	dmGUID  = "any;-;" + peer
)

var when = timestamppb.New(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))

// Every write becomes one command with the fields the request asked for,
// and its response carries what the SDK requires, chat GUIDs spelled any;.
func TestPlatformWritesBecomeCommands(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, tokID, err := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	if err != nil {
		t.Fatal(err)
	}
	c := newAPIClient(t, srv, tok)

	type wcase struct {
		name string
		call func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error)
		cmd  func(t *testing.T, cmd *linev1.Command)
		snap *linev1.Snapshot
		resp func(t *testing.T, m proto.Message)
	}
	sent := func(guid string) *linev1.Snapshot {
		return &linev1.Snapshot{MessageGuid: guid, ChatGuid: "iMessage;-;" + peer, Sent: true, Date: when, Service: "iMessage"}
	}
	message := func(t *testing.T, m proto.Message, guid, text string) *imessagev1.Message {
		t.Helper()
		msg := m.(*imessagev1.MessageResponse).GetMessage()
		if msg.GetGuid() != guid || msg.GetContent() == nil || msg.GetContent().GetText() != text || !msg.GetDateCreated().AsTime().Equal(when.AsTime()) {
			t.Fatalf("message %v", msg)
		}
		if len(msg.GetChatGuids()) != 1 || msg.GetChatGuids()[0] != dmGUID || !msg.GetIsFromMe() {
			t.Fatalf("message chat %v", msg)
		}
		return msg
	}
	chatTarget := func(t *testing.T, cmd *linev1.Command, want string) {
		t.Helper()
		if cmd.GetChatGuid() != want {
			t.Fatalf("chat_guid %q, want %q", cmd.GetChatGuid(), want)
		}
	}
	target := &imessagev1.MessageTarget{ChatGuid: dmGUID, MessageGuid: "M1"}
	cases := []wcase{{
		name: "CreateChat DM",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.chats.CreateChat(ctx, &imessagev1.CreateChatRequest{Addresses: []string{"+1 (555) 555-0123"}, Service: imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if p := cmd.GetCreateChat().GetParticipants(); len(p) != 1 || p[0] != peer || cmd.GetCreateChat().GetFirstMessage() != "" {
				t.Fatalf("create_chat %v", cmd)
			}
		},
		snap: &linev1.Snapshot{ChatGuid: "iMessage;-;" + peer, Service: "iMessage", Date: when},
		resp: func(t *testing.T, m proto.Message) {
			ch := m.(*imessagev1.CreateChatResponse).GetChat()
			if ch.GetGuid() != dmGUID || ch.GetIsGroup() || ch.GetService() != imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE ||
				len(ch.GetParticipants()) != 1 || ch.GetParticipants()[0].GetAddress() != peer {
				t.Fatalf("chat %v", ch)
			}
		},
	}, {
		name: "CreateChat group",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.chats.CreateChat(ctx, &imessagev1.CreateChatRequest{Addresses: []string{peer, "Bob@Example.com"}, Service: imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if p := cmd.GetCreateChat().GetParticipants(); len(p) != 2 || p[1] != "bob@example.com" {
				t.Fatalf("create_chat %v", cmd)
			}
		},
		snap: &linev1.Snapshot{ChatGuid: "iMessage;+;chat777", Service: "iMessage", Date: when},
		resp: func(t *testing.T, m proto.Message) {
			if ch := m.(*imessagev1.CreateChatResponse).GetChat(); ch.GetGuid() != "any;+;chat777" || !ch.GetIsGroup() {
				t.Fatalf("chat %v", ch)
			}
		},
	}, {
		name: "SendTextMessage with effect, reply and subject",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.msgs.SendTextMessage(ctx, &imessagev1.SendTextMessageRequest{
				ChatGuid: dmGUID, Text: "hi", Subject: proto.String("re"),
				EffectId: proto.String("com.apple.messages.effect.CKConfettiEffect"),
				ReplyTo:  &imessagev1.ReplyTarget{MessageGuid: "M0", TargetPartIndex: proto.Int32(1)},
			}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			chatTarget(t, cmd, dmGUID)
			st := cmd.GetSendText()
			if st.GetText() != "hi" || st.GetEffect() != "confetti" || st.GetSubject() != "re" || st.GetReplyTo().GetMessageGuid() != "M0" || st.GetReplyTo().GetPart() != 1 {
				t.Fatalf("send_text %v", st)
			}
		},
		snap: sent("G-text"),
		resp: func(t *testing.T, m proto.Message) {
			msg := message(t, m, "G-text", "hi")
			if msg.GetContent().GetExpressiveSendStyleId() != "com.apple.messages.effect.CKConfettiEffect" || msg.GetSubject() != "re" || msg.GetReplyTargetGuid() != "M0" {
				t.Fatalf("message %v", msg)
			}
		},
	}, {
		name: "SetReaction heart (reaction {})",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.msgs.SetReaction(ctx, &imessagev1.SetReactionRequest{Target: target, Reaction: &imessagev1.MessageReaction{}, IsSet: true}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			chatTarget(t, cmd, dmGUID)
			if r := cmd.GetReact(); r.GetMessageGuid() != "M1" || r.GetTapback() != "love" || r.GetRemove() {
				t.Fatalf("react %v", r)
			}
		},
		snap: sent("G-tapback"),
		resp: func(t *testing.T, m proto.Message) {
			msg := message(t, m, "G-tapback", "")
			if msg.GetReactionTargetGuid() != "M1" || !msg.GetReactionSelected() || msg.GetReaction().GetKind() != imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LOVE {
				t.Fatalf("message %v", msg)
			}
		},
	}, {
		name: "SetReaction remove (is_set absent)",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.msgs.SetReaction(ctx, &imessagev1.SetReactionRequest{Target: target, Reaction: &imessagev1.MessageReaction{Kind: imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_QUESTION}}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if r := cmd.GetReact(); r.GetTapback() != "question" || !r.GetRemove() {
				t.Fatalf("react %v", r)
			}
		},
		snap: sent("G-untapback"),
		resp: func(t *testing.T, m proto.Message) {
			if msg := message(t, m, "G-untapback", ""); msg.GetReactionSelected() {
				t.Fatalf("message %v", msg)
			}
		},
	}, {
		name: "SetReaction emoji",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.msgs.SetReaction(ctx, &imessagev1.SetReactionRequest{Target: &imessagev1.MessageTarget{ChatGuid: dmGUID, MessageGuid: "M1", TargetPartIndex: proto.Int32(2)},
				Reaction: &imessagev1.MessageReaction{Kind: imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_EMOJI, Emoji: proto.String("🔥")}, IsSet: true}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if r := cmd.GetReact(); r.GetEmoji() != "🔥" || r.GetPart() != 2 || r.GetRemove() {
				t.Fatalf("react %v", r)
			}
		},
		snap: sent("G-emoji"),
		resp: func(t *testing.T, m proto.Message) {
			if msg := message(t, m, "G-emoji", ""); msg.GetReaction().GetEmoji() != "🔥" || msg.GetReactionTargetPartIndex() != 2 {
				t.Fatalf("message %v", msg)
			}
		},
	}, {
		name: "SetTyping on",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.chats.SetTyping(ctx, &imessagev1.SetTypingRequest{ChatGuid: dmGUID, IsTyping: true}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if chatTarget(t, cmd, dmGUID); cmd.GetTyping() == nil || !cmd.GetTyping().GetOn() {
				t.Fatalf("typing %v", cmd)
			}
		},
		snap: &linev1.Snapshot{},
	}, {
		name: "SetTyping off (is_typing absent)",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.chats.SetTyping(ctx, &imessagev1.SetTypingRequest{ChatGuid: dmGUID}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if cmd.GetTyping() == nil || cmd.GetTyping().GetOn() {
				t.Fatalf("typing %v", cmd)
			}
		},
		snap: &linev1.Snapshot{},
	}, {
		name: "EditMessage",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.msgs.EditMessage(ctx, &imessagev1.EditMessageRequest{Target: target, NewText: "fixed"}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if e := cmd.GetEdit(); e.GetMessageGuid() != "M1" || e.GetText() != "fixed" {
				t.Fatalf("edit %v", cmd)
			}
		},
		snap: sent("M1"),
		resp: func(t *testing.T, m proto.Message) { message(t, m, "M1", "fixed") },
	}, {
		name: "UnsendMessage",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.msgs.UnsendMessage(ctx, &imessagev1.UnsendMessageRequest{Target: target}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if cmd.GetUnsend().GetMessageGuid() != "M1" {
				t.Fatalf("unsend %v", cmd)
			}
		},
		snap: sent("M1"),
	}, {
		name: "SetBackground (raw bytes, no MIME type)",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.chats.SetBackground(ctx, &imessagev1.SetBackgroundRequest{ChatGuid: dmGUID, Data: []byte("\x89PNG\r\n\x1a\nfake")}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if bg := cmd.GetSetBackground(); string(bg.GetData()) != "\x89PNG\r\n\x1a\nfake" || bg.GetMimeType() != "" {
				t.Fatalf("set_background %v", cmd)
			}
		},
		snap: &linev1.Snapshot{ChatGuid: "iMessage;-;" + peer, AssetId: "asset-1"},
	}, {
		name: "RemoveBackground",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.chats.RemoveBackground(ctx, &imessagev1.RemoveBackgroundRequest{ChatGuid: dmGUID}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if cmd.GetClearBackground() == nil {
				t.Fatalf("clear_background %v", cmd)
			}
		},
		snap: &linev1.Snapshot{},
	}, {
		name: "MarkChatRead",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.chats.MarkChatRead(ctx, &imessagev1.MarkChatReadRequest{ChatGuid: dmGUID}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if cmd.GetMarkRead() == nil {
				t.Fatalf("mark_read %v", cmd)
			}
		},
		snap: &linev1.Snapshot{ChatGuid: "iMessage;-;" + peer},
	}, {
		name: "SetDisplayName",
		call: func(ctx context.Context, o ...grpc.CallOption) (proto.Message, error) {
			return c.groups.SetDisplayName(ctx, &imessagev1.SetDisplayNameRequest{ChatGuid: "any;+;chat777", DisplayName: "Team"}, o...)
		},
		cmd: func(t *testing.T, cmd *linev1.Command) {
			if chatTarget(t, cmd, "any;+;chat777"); cmd.GetRenameGroup().GetName() != "Team" {
				t.Fatalf("rename_group %v", cmd)
			}
		},
		snap: &linev1.Snapshot{ChatGuid: "iMessage;+;chat777", Service: "iMessage"},
		resp: func(t *testing.T, m proto.Message) {
			if ch := m.(*imessagev1.SetDisplayNameResponse).GetChat(); ch.GetGuid() != "any;+;chat777" || !ch.GetIsGroup() || ch.GetDisplayName() != "Team" {
				t.Fatalf("chat %v", ch)
			}
		},
	}}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := "key-" + string(rune('a'+i))
			ch := startCall(func(o ...grpc.CallOption) (proto.Message, error) { return tc.call(c.ctx(key), o...) })
			cmd := a.nextCommand()
			if cmd.GetId() != "api:"+tokID+":key:"+key || cmd.GetLine() != apiLine || cmd.GetDeadline() == nil {
				t.Fatalf("command id %q line %q deadline %v", cmd.GetId(), cmd.GetLine(), cmd.GetDeadline())
			}
			tc.cmd(t, cmd)
			stillRunning(t, ch, 50*time.Millisecond)
			a.apiSucceed(cmd.GetId(), tc.snap)
			r := awaitCall(t, ch)
			if r.err != nil {
				t.Fatalf("%s: %v", tc.name, r.err)
			}
			if tc.resp != nil {
				tc.resp(t, r.resp)
			}
			b, _ := protojson.Marshal(r.resp)
			noChatDBSpelling(t, "the response", string(b))
		})
	}
}

// A snapshot without a date still gives the message a date_created (when
// the relay stored the result), which the SDK requires.
func TestPlatformMessageDateFallback(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	ch := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(c.ctx("k"), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	})
	a.apiSucceed(a.nextCommand().GetId(), &linev1.Snapshot{MessageGuid: "G", Sent: true})
	r := awaitCall(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if m := r.resp.(*imessagev1.MessageResponse).GetMessage(); m.GetDateCreated() == nil || m.GetGuid() != "G" || m.GetChatGuids()[0] != dmGUID {
		t.Fatalf("message %v", m)
	}
}

// A repeated x-idempotency-key is one command: the repeat, during the first
// call or after it, returns the first outcome and nothing runs twice. The
// key is scoped to the token, client_message_id wins over the metadata, a
// long key is hashed into a bounded id, a call without a key gets a fresh
// id, and a key reused for another request is refused.
func TestPlatformIdempotencyKey(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, tokID, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	tok2, tok2ID, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c, c2 := newAPIClient(t, srv, tok), newAPIClient(t, srv, tok2)
	send := func(c *apiClient, key, text string) <-chan callResult {
		return startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
			return c.msgs.SendTextMessage(c.ctx(key), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: text}, o...)
		})
	}
	guidOf := func(r callResult) string {
		t.Helper()
		if r.err != nil {
			t.Fatalf("call: %v", r.err)
		}
		return r.resp.(*imessagev1.MessageResponse).GetMessage().GetGuid()
	}

	first := send(c, "k1", "once")
	cmd := a.nextCommand()
	again := send(c, "k1", "once") // while the first is still waiting
	a.noCommand(100 * time.Millisecond)
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: "G-once", Sent: true, Date: when})
	if g1, g2 := guidOf(awaitCall(t, first)), guidOf(awaitCall(t, again)); g1 != "G-once" || g2 != "G-once" {
		t.Fatalf("guids %q %q", g1, g2)
	}
	if g := guidOf(awaitCall(t, send(c, "k1", "once"))); g != "G-once" { // after it
		t.Fatalf("repeat after the result: %q", g)
	}
	a.noCommand(100 * time.Millisecond)

	// A failure is the first outcome too.
	failed := send(c, "k-fail", "nope")
	a.apiFail(a.nextCommand().GetId(), &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "NOT_FOUND: no chat iMessage;-;+15555550123 on this Mac"})
	r1, r2 := awaitCall(t, failed), awaitCall(t, send(c, "k-fail", "nope"))
	if status.Code(r1.err) != codes.NotFound || status.Code(r2.err) != codes.NotFound || trailer1(r2.trailer, trailerErrorCode) != sdkChatNotFound {
		t.Fatalf("repeat of a failure: %v / %v %v", r1.err, r2.err, r2.trailer)
	}
	a.noCommand(100 * time.Millisecond)

	// The same key from another token is another command.
	other := send(c2, "k1", "once")
	if id := a.nextCommand().GetId(); id != "api:"+tok2ID+":key:k1" {
		t.Fatalf("other token's id %q", id)
	} else {
		a.apiSucceed(id, &linev1.Snapshot{MessageGuid: "G-other", Sent: true, Date: when})
	}
	if g := guidOf(awaitCall(t, other)); g != "G-other" {
		t.Fatalf("other token: %q", g)
	}

	// client_message_id wins over the metadata.
	cm := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(c.ctx("k-meta"), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "x", ClientMessageId: proto.String("cm-1")}, o...)
	})
	if id := a.nextCommand().GetId(); id != "api:"+tokID+":key:cm-1" {
		t.Fatalf("client_message_id id %q", id)
	} else {
		a.apiSucceed(id, &linev1.Snapshot{MessageGuid: "G-cm", Sent: true, Date: when})
	}
	guidOf(awaitCall(t, cm))

	// A long key is hashed: bounded, and still the same command when repeated.
	long := strings.Repeat("k", 400)
	lc := send(c, long, "long")
	lcmd := a.nextCommand()
	if id := lcmd.GetId(); len(id) > 256 || !strings.HasPrefix(id, "api:"+tokID+":sha256:") {
		t.Fatalf("long key id %q", id)
	}
	lc2 := send(c, long, "long")
	a.noCommand(100 * time.Millisecond)
	a.apiSucceed(lcmd.GetId(), &linev1.Snapshot{MessageGuid: "G-long", Sent: true, Date: when})
	if guidOf(awaitCall(t, lc)) != "G-long" || guidOf(awaitCall(t, lc2)) != "G-long" {
		t.Fatal("long key repeat")
	}

	// No key at all: each call is its own command.
	n1, n2 := send(c, "", "a"), send(c, "", "b")
	ids := map[string]bool{}
	for range 2 {
		cmd := a.nextCommand()
		if !strings.HasPrefix(cmd.GetId(), "api:"+tokID+":new:") {
			t.Fatalf("keyless id %q", cmd.GetId())
		}
		ids[cmd.GetId()] = true
		a.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: "G-" + cmd.GetSendText().GetText(), Sent: true, Date: when})
	}
	if len(ids) != 2 || guidOf(awaitCall(t, n1)) != "G-a" || guidOf(awaitCall(t, n2)) != "G-b" {
		t.Fatalf("keyless calls: %v", ids)
	}

	// The same key for a different request changes nothing and is refused.
	r := awaitCall(t, send(c, "k1", "something else"))
	if status.Code(r.err) != codes.FailedPrecondition || trailer1(r.trailer, trailerErrorCode) != sdkPreconditionFailed ||
		trailer1(r.trailer, trailerRetryable) != "false" || trailer1(r.trailer, trailerContext+"idempotency_key") != "k1" {
		t.Fatalf("reused key: %v %s", r.err, trailerText(r.trailer))
	}
	a.noCommand(100 * time.Millisecond)
}

// A caller that cancels its call has not cancelled the command: it runs,
// and the same key later returns its outcome.
func TestPlatformCancelledCallLeavesTheCommand(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, tokID, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	ctx, cancel := context.WithCancel(c.ctx("k-cancel"))
	ch := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(ctx, &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	})
	cmd := a.nextCommand()
	cancel()
	if r := awaitCall(t, ch); status.Code(r.err) != codes.Canceled {
		t.Fatalf("cancelled call: %v", r.err)
	}
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: "G-late", Sent: true, Date: when})
	waitState(t, srv, "api:"+tokID+":key:k-cancel", stateSucceeded)
	r := awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(c.ctx("k-cancel"), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	}))
	if r.err != nil || r.resp.(*imessagev1.MessageResponse).GetMessage().GetGuid() != "G-late" {
		t.Fatalf("repeat after the cancelled call: %v %v", r.resp, r.err)
	}
}

// A pool token gives each end user one line, the least used one the first
// time, and keeps it across a relay restart; a group keeps the line it was
// created on; a pool no Mac serves is UNAVAILABLE.
func TestPoolStickinessSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	srv := startRelay(t, dir, Options{})
	const l1, l2 = "+15550000001", "+15550000002"
	a1, a2 := enrollAgent(t, srv, l1), enrollAgent(t, srv, l2)
	a1.connect()
	a2.connect()
	tok, _, err := srv.CreateAPIToken(context.Background(), []string{l1, l2}, true)
	if err != nil {
		t.Fatal(err)
	}
	c := newAPIClient(t, srv, tok)
	agents := map[string]*testAgent{l1: a1, l2: a2}
	// sendTo sends to handle and answers on the agent that gets it,
	// returning its line.
	var n int
	sendTo := func(c *apiClient, chat string) string {
		t.Helper()
		n++
		ch := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
			return c.msgs.SendTextMessage(c.ctx(""), &imessagev1.SendTextMessageRequest{ChatGuid: chat, Text: "hi"}, o...)
		})
		var got string
		for got == "" {
			for line, a := range agents {
				select {
				case f := <-a.cur.commands:
					cmd := f.GetCommand()
					if cmd.GetLine() != line {
						t.Fatalf("agent of %s got a command for %s", line, cmd.GetLine())
					}
					a.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: cmd.GetId(), Sent: true, Date: when})
					got = line
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		if r := awaitCall(t, ch); r.err != nil {
			t.Fatalf("send to %s: %v", chat, r.err)
		}
		return got
	}
	alice, bob, carol := "any;-;+15557770001", "any;-;bob@example.com", "any;-;+15557770003"
	if got := sendTo(c, alice); got != l1 {
		t.Fatalf("alice on %s, want the first line (a tie)", got)
	}
	if got := sendTo(c, bob); got != l2 {
		t.Fatalf("bob on %s, want the line with fewer assignments", got)
	}
	for range 2 {
		if sendTo(c, alice) != l1 || sendTo(c, "any;-;Bob@Example.COM") != l2 {
			t.Fatal("a handle changed lines")
		}
	}

	// A new group goes on the least used line (a tie: the first) and
	// keeps it.
	group := startCall(func(o ...grpc.CallOption) (*imessagev1.CreateChatResponse, error) {
		return c.chats.CreateChat(c.ctx(""), &imessagev1.CreateChatRequest{Addresses: []string{"+15557770001", "bob@example.com"}}, o...)
	})
	gcmd := a1.nextCommand()
	a1.apiSucceed(gcmd.GetId(), &linev1.Snapshot{ChatGuid: "iMessage;+;chat42", Date: when})
	if r := awaitCall(t, group); r.err != nil || r.resp.(*imessagev1.CreateChatResponse).GetChat().GetGuid() != "any;+;chat42" {
		t.Fatalf("create group: %v %v", r.resp, r.err)
	}

	// After a restart on the same data dir, nobody moves.
	a1.close()
	a2.close()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv = startRelay(t, dir, Options{})
	for _, a := range agents {
		a.redial(srv)
		a.connect()
	}
	c = newAPIClient(t, srv, tok)
	if sendTo(c, bob) != l2 || sendTo(c, alice) != l1 || sendTo(c, "any;+;chat42") != l1 {
		t.Fatal("an assignment did not survive the restart")
	}
	// carol is new: l1 has alice and the group, l2 only bob.
	if got := sendTo(c, carol); got != l2 {
		t.Fatalf("carol on %s, want %s", got, l2)
	}
	// A group the relay has no record of goes to the first line, and stays.
	if sendTo(c, "any;+;chat-unknown") != l1 || sendTo(c, "any;+;chat-unknown") != l1 {
		t.Fatal("an unrecorded group not on the first line")
	}

	// A pool no Mac serves: UNAVAILABLE, retryable, nothing recorded.
	dead, _, _ := srv.CreateAPIToken(context.Background(), []string{"+15550000009", "+15550000008"}, true)
	dc := newAPIClient(t, srv, dead)
	r := awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return dc.msgs.SendTextMessage(dc.ctx(""), &imessagev1.SendTextMessageRequest{ChatGuid: alice, Text: "hi"}, o...)
	}))
	if status.Code(r.err) != codes.Unavailable || trailer1(r.trailer, trailerErrorCode) != sdkServiceUnavailable || trailer1(r.trailer, trailerRetryable) != "true" {
		t.Fatalf("dead pool: %v %s", r.err, trailerText(r.trailer))
	}
}

// SetBackground returns only with the agent's final result, not while the
// upload is in progress.
func TestSetBackgroundWaitsForTheFinalResult(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	// Over 256 KiB: the image rides as a blob, which changes nothing here.
	img := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 300<<10)...)
	ch := startCall(func(o ...grpc.CallOption) (*emptypb.Empty, error) {
		return c.chats.SetBackground(c.ctx("bg"), &imessagev1.SetBackgroundRequest{ChatGuid: dmGUID, Data: img}, o...)
	})
	cmd := a.nextCommand()
	if cmd.GetSetBackground().GetBlob().GetSize() != uint64(len(img)) {
		t.Fatalf("set_background %v", cmd.GetSetBackground())
	}
	a.update(cmd.GetId(), linev1.CommandState_COMMAND_STATE_ACCEPTED, nil)
	stillRunning(t, ch, 150*time.Millisecond)
	a.update(cmd.GetId(), linev1.CommandState_COMMAND_STATE_IN_PROGRESS, &linev1.Progress{Stage: "uploading", Done: 1, Total: 2})
	stillRunning(t, ch, 150*time.Millisecond)
	a.update(cmd.GetId(), linev1.CommandState_COMMAND_STATE_IN_PROGRESS, &linev1.Progress{Stage: "distributable", Done: 2, Total: 2})
	stillRunning(t, ch, 150*time.Millisecond)
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{ChatGuid: "iMessage;-;" + peer, AssetId: "asset-1"})
	if r := awaitCall(t, ch); r.err != nil {
		t.Fatalf("SetBackground: %v", r.err)
	}
}

// The relay answers with its own deadline: DEADLINE_EXCEEDED and the last
// state seen, retryable only when the command never left the relay.
func TestPlatformRelayDeadline(t *testing.T) {
	srv := startRelay(t, "", Options{DefaultCommandTimeout: 300 * time.Millisecond, ResultGrace: 300 * time.Millisecond})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	start := time.Now()
	ch := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(c.ctx("slow"), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	})
	cmd := a.nextCommand()
	a.update(cmd.GetId(), linev1.CommandState_COMMAND_STATE_IN_PROGRESS, nil)
	r := awaitCall(t, ch)
	if status.Code(r.err) != codes.DeadlineExceeded || trailer1(r.trailer, trailerErrorCode) != sdkTimeout ||
		trailer1(r.trailer, trailerRetryable) != "false" || trailer1(r.trailer, trailerContext+"last_state") != stateInProgress ||
		!strings.Contains(status.Convert(r.err).Message(), "last state: in_progress") {
		t.Fatalf("in progress past its deadline: %v %s", r.err, trailerText(r.trailer))
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("answered after %s, before the deadline plus grace", d)
	}

	// The Mac is away: the command stays queued, and a retry is safe.
	a.close()
	eventually(t, "the agent to disconnect", func() bool { return !agentView(t, srv, a.id).Connected })
	r = awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(c.ctx("queued"), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	}))
	if status.Code(r.err) != codes.DeadlineExceeded || trailer1(r.trailer, trailerRetryable) != "true" || trailer1(r.trailer, trailerContext+"last_state") != stateQueued {
		t.Fatalf("queued past its deadline: %v %s", r.err, trailerText(r.trailer))
	}
}

// The caller's own deadline, when it sets one, is answered the same way.
func TestPlatformCallerDeadline(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, tokID, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	ctx, cancel := context.WithTimeout(c.ctx("k"), 300*time.Millisecond)
	defer cancel()
	ch := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(ctx, &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	})
	cmd := a.nextCommand()
	if r := awaitCall(t, ch); status.Code(r.err) != codes.DeadlineExceeded {
		t.Fatalf("caller deadline: %v", r.err)
	}
	// The command goes on.
	if v := getCommand(t, srv, "api:"+tokID+":key:k"); v.State != stateDispatched {
		t.Fatalf("command after the caller's deadline: %+v", v)
	}
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: "G", Sent: true})
	waitState(t, srv, cmd.GetId(), stateSucceeded)
}

// The waiters wake every watcher of a command once, each with its own
// copy of the final row, and forget commands nobody waits for.
func TestCommandWaiters(t *testing.T) {
	var w commandWaiters
	cw1, rel1 := w.watch("c")
	cw2, rel2 := w.watch("c")
	other, relOther := w.watch("d")
	final := &commandRow{id: "c", state: stateSucceeded, result: []byte("snapshot")}
	w.finished("c", final)
	for _, cw := range []*commandWait{cw1, cw2} {
		select {
		case <-cw.ch:
		default:
			t.Fatal("a watcher was not woken")
		}
		r := cw.row()
		if r == nil || r == final || r.state != stateSucceeded || string(r.result) != "snapshot" {
			t.Fatalf("a watcher's final row: %+v (want a copy of %+v)", r, final)
		}
		r.state = stateFailed // one waiter's copy is its own
	}
	if cw1.row().state != stateSucceeded {
		t.Fatal("a waiter changed another's final row")
	}
	select {
	case <-other.ch:
		t.Fatal("another command's watcher was woken")
	default:
	}
	rel1()
	rel2()
	rel1()
	relOther()
	w.finished("nobody", nil)
	if len(w.m) != 0 {
		t.Fatalf("waiters left: %v", w.m)
	}
	// The sweeper's wake-up carries no row: the waiter reads it.
	cw3, rel3 := w.watch("e")
	w.finished("e", nil)
	<-cw3.ch
	if cw3.row() != nil {
		t.Fatal("a wake-up without a row gave one")
	}
	rel3()
}
