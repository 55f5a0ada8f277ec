package main

import (
	"context"
	"crypto/tls"
	"fmt"
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
	"github.com/line-agent/line-agent/relay/opclient"
)

// startPoolAgent runs a real agent on simulated Messages serving line,
// allowed newConversations a day, enrolled with the project token tok.
func startPoolAgent(t *testing.T, srv *relay.Server, tok, line string, newConversations int) {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dataDir := t.TempDir()
	if _, err := agent.Enroll(ctx, agent.EnrollOptions{DialOptions: agent.DialOptions{Addr: srv.GRPCAddr(), CAFile: srv.CAFile()}, Token: tok, DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{DataDir: dataDir, Driver: "sim", SimLine: line, SimLatency: 5 * time.Millisecond, SimReplyDelay: time.Hour,
		MaxChats: 4, MaxQueued: 64, MaxOutbox: 1000, ShutdownGrace: 5 * time.Second, BackoffBase: 50 * time.Millisecond, BackoffCap: time.Second,
		QuotaNewConversations: newConversations}
	be, err := openSim(ctx, cfg, log, simSetup{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: be, Logger: log})
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan error, 1)
	runCtx, cancel := context.WithCancel(ctx)
	go func() { done <- a.Run(runCtx, stop) }()
	t.Cleanup(func() {
		close(stop)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
}

// waitHeadroom waits until the relay's last report from line's agent says
// left new conversations remain on it.
func waitHeadroom(t *testing.T, srv *relay.Server, line string, left int) {
	t.Helper()
	var seen []relay.HeadroomView
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		as, err := srv.Agents(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.LastHealth == nil {
				continue
			}
			for _, h := range a.LastHealth.Headroom {
				if h.Line == line {
					if seen = a.LastHealth.Headroom; h.NewConversationsLeft == left {
						return
					}
				}
			}
		}
	}
	t.Fatalf("no report of %d new conversations left on %s; last seen %+v", left, line, seen)
}

// Through two real agents with their own quotas, a pool token places each
// new end user on the line whose agent reports the most new-conversation
// headroom; once every line is full the user is placed anyway and the
// agent refuses truthfully, which the SDK sees as dailyLimitExceeded.
func TestPoolFollowsAgentsHeadroomEndToEnd(t *testing.T) {
	const l1, l2 = "+15550000001", "+15550000002"
	ctx := context.Background()
	srv, err := relay.New(relay.Options{DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		HeartbeatInterval: 200 * time.Millisecond, HealthCheckInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tok, err := srv.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	startPoolAgent(t, srv, tok, l1, 1)
	startPoolAgent(t, srv, tok, l2, 3)
	waitHeadroom(t, srv, l1, 1)
	waitHeadroom(t, srv, l2, 3)

	poolTok, tokenID, err := srv.CreateAPIToken(ctx, []string{l1, l2}, true)
	if err != nil {
		t.Fatal(err)
	}
	chats := poolChats(t, srv)
	ops := opclient.New(srv.HTTPAddr())
	call := func(key string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+poolTok, "x-idempotency-key", key)
	}
	// greet starts a chat with a new end user, with a first message (a new
	// conversation for the agent), and returns the line it went out on and
	// the call's error.
	greet := func(n int, o ...grpc.CallOption) (string, error) {
		t.Helper()
		key := fmt.Sprintf("greet-%d", n)
		_, err := chats.CreateChat(call(key), &imessagev1.CreateChatRequest{
			Addresses: []string{fmt.Sprintf("+1555999000%d", n)}, InitialMessage: &imessagev1.CreateChatInitialMessage{Text: "hello"}}, o...)
		v, gerr := ops.Command(ctx, "api:"+tokenID+":key:"+key)
		if gerr != nil {
			t.Fatalf("the command of greeting %d: %v (the call: %v)", n, gerr, err)
		}
		return v.Line, err
	}
	// l2 has 3, l1 1: two on l2, then a tie at 1 goes to the line with
	// fewer users in 24 h, then l2's last. Each waits for the agent's report of it, so
	// the test does not race a report built before the send.
	for i, want := range []struct {
		line string
		left int
	}{{l2, 2}, {l2, 1}, {l1, 0}, {l2, 0}} {
		line, err := greet(i)
		if err != nil || line != want.line {
			t.Fatalf("new user %d: on %s (%v), want %s", i, line, err, want.line)
		}
		waitHeadroom(t, srv, line, want.left)
	}
	var trailer metadata.MD
	line, err := greet(4, grpc.Trailer(&trailer))
	if line != l1 {
		t.Fatalf("with every line full: on %s, want %s (fewer users in 24 h)", line, l1)
	}
	if status.Code(err) != codes.ResourceExhausted || first(trailer, "error-code") != "dailyLimitExceeded" {
		t.Fatalf("with every line full: %v (error-code %q), want RESOURCE_EXHAUSTED dailyLimitExceeded from the agent", err, first(trailer, "error-code"))
	}
}

// poolChats is the platform API's ChatService over TLS, trusting only the
// relay's CA.
func poolChats(t *testing.T, srv *relay.Server) imessagev1.ChatServiceClient {
	t.Helper()
	roots, err := capool.Load(srv.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	cc, err := grpc.NewClient("passthrough:///"+srv.APIAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return imessagev1.NewChatServiceClient(cc)
}
