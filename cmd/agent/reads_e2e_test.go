package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/pkg/capool"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
	"github.com/line-agent/line-agent/relay"
)

// sdk is an app on the platform API: the generated photon.imessage.v1
// clients over the relay's TLS listener, trusting only its CA, with a token.
type sdk struct {
	msgs   imessagev1.MessageServiceClient
	chats  imessagev1.ChatServiceClient
	groups imessagev1.GroupServiceClient
	auth   metadata.MD
}

func newSDK(t *testing.T, srv *relay.Server, lines ...string) *sdk {
	t.Helper()
	tok, _, err := srv.CreateAPIToken(context.Background(), lines, false)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := capool.Load(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &sdk{msgs: imessagev1.NewMessageServiceClient(cc), chats: imessagev1.NewChatServiceClient(cc),
		groups: imessagev1.NewGroupServiceClient(cc), auth: metadata.Pairs("authorization", "Bearer "+tok)}
}

// ctx is a call's context: the token and a bound on the whole call.
func (s *sdk) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), s.auth), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// notFound asserts err is NOT_FOUND with the SDK's error code.
func notFound(t *testing.T, what string, err error, md metadata.MD, code string) {
	t.Helper()
	if status.Code(err) != codes.NotFound || len(md.Get("error-code")) != 1 || md.Get("error-code")[0] != code {
		t.Errorf("%s: %v (error-code %v), want NOT_FOUND %s", what, err, md.Get("error-code"), code)
	}
}

// addSimAgent enrolls and runs a second agent, with its own simulated
// Messages serving line, against the e2e's relay.
func addSimAgent(t *testing.T, h *e2e, line string) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tok, err := h.relay.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	if _, err := agent.Enroll(ctx, agent.EnrollOptions{DialOptions: agent.DialOptions{Addr: h.relay.GRPCAddr(), CAFile: h.relay.CAFile()}, Token: tok, DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{DataDir: dataDir, Driver: "sim", SimLine: line, SimLatency: 5 * time.Millisecond, SimReplyDelay: time.Hour,
		MaxChats: 2, MaxQueued: 16, MaxOutbox: 100, ShutdownGrace: 5 * time.Second, BackoffBase: 50 * time.Millisecond, BackoffCap: time.Second}
	be, err := openSim(ctx, cfg, log, simSetup{NoHelper: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: be, Logger: log})
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		as, _ := h.relay.Agents(ctx)
		n := 0
		for _, v := range as {
			if v.Connected {
				n++
			}
		}
		if n == 2 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("the second agent did not connect: %+v", as)
		}
	}
}

// GetMessage and GetChat through the platform API, answered by the agent
// from the simulated Messages' chat.db: a message reads as Messages holds
// it now, in either direction, edited, as a tapback row or a reply; a chat
// with its people and name; what is not there, or is another token's
// line's, is NOT_FOUND with the SDK's code.
func TestPlatformReadsEndToEnd(t *testing.T) {
	h := startE2E(t, simSetup{})
	h.waitAgent(func(v relay.AgentView) bool { return len(v.Capabilities) > 0 })
	app := newSDK(t, h.relay, e2eLine)
	dm := "any;-;" + e2ePeer
	get := func(guid string) *imessagev1.Message {
		t.Helper()
		r, err := app.msgs.GetMessage(app.ctx(t), &imessagev1.GetMessageRequest{MessageGuid: guid})
		if err != nil {
			t.Fatalf("GetMessage %s: %v", guid, err)
		}
		return r.GetMessage()
	}

	if _, err := app.chats.CreateChat(app.ctx(t), &imessagev1.CreateChatRequest{Addresses: []string{e2ePeer}, Service: imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE}); err != nil {
		t.Fatal(err)
	}
	sent, err := app.msgs.SendTextMessage(app.ctx(t), &imessagev1.SendTextMessageRequest{ChatGuid: dm, Text: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	out := sent.GetMessage().GetGuid()
	m := get(out)
	if m.GetGuid() != out || m.GetContent().GetText() != "hello" || !m.GetIsFromMe() || !m.GetIsSent() || m.GetDateCreated() == nil ||
		len(m.GetChatGuids()) != 1 || m.GetChatGuids()[0] != dm || m.GetSender().GetAddress() != e2eLine {
		t.Errorf("outbound %v", m)
	}

	in := h.incoming("hi back")
	m = get(in)
	if m.GetContent().GetText() != "hi back" || m.GetIsFromMe() || m.GetSender().GetAddress() != e2ePeer || m.GetChatGuids()[0] != dm {
		t.Errorf("inbound %v", m)
	}

	if _, err := app.msgs.EditMessage(app.ctx(t), &imessagev1.EditMessageRequest{
		Target: &imessagev1.MessageTarget{ChatGuid: dm, MessageGuid: out}, NewText: "hello, edited"}); err != nil {
		t.Fatal(err)
	}
	m = get(out)
	if m.GetContent().GetText() != "hello, edited" || m.GetDateEdited() == nil {
		t.Errorf("edited %v", m)
	}

	rx, err := app.msgs.SetReaction(app.ctx(t), &imessagev1.SetReactionRequest{
		Target: &imessagev1.MessageTarget{ChatGuid: dm, MessageGuid: in}, Reaction: &imessagev1.MessageReaction{}, IsSet: true})
	if err != nil {
		t.Fatal(err)
	}
	m = get(rx.GetMessage().GetGuid())
	if m.GetReactionTargetGuid() != in || m.GetReaction().GetKind() != imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_LOVE ||
		!m.GetReactionSelected() || !m.GetIsFromMe() || m.GetContent() == nil || m.GetDateCreated() == nil {
		t.Errorf("tapback row %v", m)
	}

	reply, err := app.msgs.SendTextMessage(app.ctx(t), &imessagev1.SendTextMessageRequest{ChatGuid: dm, Text: "re: hi",
		ReplyTo: &imessagev1.ReplyTarget{MessageGuid: in}})
	if err != nil {
		t.Fatal(err)
	}
	if m = get(reply.GetMessage().GetGuid()); m.GetReplyTargetGuid() != in || m.GetThreadOriginatorGuid() != in {
		t.Errorf("reply %v", m)
	}

	var md metadata.MD
	_, err = app.msgs.GetMessage(app.ctx(t), &imessagev1.GetMessageRequest{MessageGuid: "NO-SUCH-MESSAGE"}, grpc.Trailer(&md))
	notFound(t, "unknown message", err, md, "messageNotFound")

	c, err := app.chats.GetChat(app.ctx(t), &imessagev1.GetChatRequest{ChatGuid: dm})
	if ch := c.GetChat(); err != nil || ch.GetGuid() != dm || ch.GetIsGroup() || len(ch.GetParticipants()) != 1 ||
		ch.GetParticipants()[0].GetAddress() != e2ePeer || ch.GetService() != imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE {
		t.Errorf("DM %v %v", ch, err)
	}
	created, err := app.chats.CreateChat(app.ctx(t), &imessagev1.CreateChatRequest{Addresses: []string{"+15557650001", "+15557650002"},
		Service: imessagev1.ChatServiceType_CHAT_SERVICE_TYPE_IMESSAGE})
	if err != nil {
		t.Fatal(err)
	}
	group := created.GetChat().GetGuid()
	if _, err := app.groups.SetDisplayName(app.ctx(t), &imessagev1.SetDisplayNameRequest{ChatGuid: group, DisplayName: "Team"}); err != nil {
		t.Fatal(err)
	}
	c, err = app.chats.GetChat(app.ctx(t), &imessagev1.GetChatRequest{ChatGuid: group})
	if ch := c.GetChat(); err != nil || ch.GetGuid() != group || !ch.GetIsGroup() || ch.GetDisplayName() != "Team" || len(ch.GetParticipants()) != 2 {
		t.Errorf("group %v %v", ch, err)
	}
	md = nil
	_, err = app.chats.GetChat(app.ctx(t), &imessagev1.GetChatRequest{ChatGuid: "any;-;+15550009999"}, grpc.Trailer(&md))
	notFound(t, "unknown chat", err, md, "chatNotFound")

	// Another token, another line on another Mac: our messages are not its.
	const other = "+15550000002"
	addSimAgent(t, h, other)
	stranger := newSDK(t, h.relay, other)
	md = nil
	_, err = stranger.msgs.GetMessage(stranger.ctx(t), &imessagev1.GetMessageRequest{MessageGuid: out}, grpc.Trailer(&md))
	notFound(t, "another line's message", err, md, "messageNotFound")
}
