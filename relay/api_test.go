package relay

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// A wrong, missing or revoked token gets UNAUTHENTICATED on every platform
// API call, streams included; a valid one gets through to the method.
func TestPlatformAPITokens(t *testing.T) {
	srv := startRelay(t, "", Options{})
	cc := dial(t, srv)
	msgs := imessagev1.NewMessageServiceClient(cc)
	chats := imessagev1.NewChatServiceClient(cc)
	tok, id, err := srv.CreateAPIToken(context.Background(), []string{"+15550000001"}, false)
	if err != nil {
		t.Fatal(err)
	}
	with := func(tok string) context.Context {
		if tok == "" {
			return context.Background()
		}
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	}
	call := func(ctx context.Context) (unary, stream codes.Code) {
		_, err := chats.MarkChatRead(ctx, &imessagev1.MarkChatReadRequest{ChatGuid: "any;-;+15557654321"})
		unary = status.Code(err)
		st, err := msgs.SubscribeMessageEvents(ctx, &imessagev1.SubscribeMessageEventsRequest{})
		if err == nil {
			_, err = st.Recv()
		}
		return unary, status.Code(err)
	}
	for name, tk := range map[string]string{"none": "", "wrong": "lrk_wrong", "agent's": "lra_x"} {
		if u, s := call(with(tk)); u != codes.Unauthenticated || s != codes.Unauthenticated {
			t.Errorf("%s token: unary %s, stream %s", name, u, s)
		}
	}
	if u, s := call(with(tok)); u == codes.Unauthenticated || s == codes.Unauthenticated {
		t.Fatalf("valid token refused: unary %s, stream %s", u, s)
	}
	if err := srv.store.revokeAPIToken(context.Background(), id, srv.now()); err != nil {
		t.Fatal(err)
	}
	if u, s := call(with(tok)); u != codes.Unauthenticated || s != codes.Unauthenticated {
		t.Fatalf("revoked token: unary %s, stream %s", u, s)
	}
	// A dedicated token names exactly one line.
	if _, _, err := srv.CreateAPIToken(context.Background(), []string{"+15550000001", "+15550000002"}, false); err == nil {
		t.Fatal("a dedicated token for two lines was created")
	}
}

// With Options.APIAddr the platform API has its own listener, and the
// agents' listener does not serve it.
func TestPlatformAPIOnItsOwnAddress(t *testing.T) {
	srv := startRelay(t, "", Options{APIAddr: "127.0.0.1:0"})
	if srv.APIAddr() == srv.GRPCAddr() || srv.APIAddr() == "" {
		t.Fatalf("api %q, grpc %q", srv.APIAddr(), srv.GRPCAddr())
	}
	tok, _, err := srv.CreateAPIToken(context.Background(), []string{"+15550000001"}, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	req := &imessagev1.MarkChatReadRequest{ChatGuid: "any;-;+15557654321"}
	_, err = imessagev1.NewChatServiceClient(dialAddr(t, srv, srv.APIAddr())).MarkChatRead(ctx, req)
	if c := status.Code(err); c == codes.Unauthenticated || c == codes.Unimplemented && strings.Contains(status.Convert(err).Message(), "unknown service") {
		t.Fatalf("platform API address: %v", err)
	}
	_, err = imessagev1.NewChatServiceClient(dial(t, srv)).MarkChatRead(ctx, req)
	if status.Code(err) != codes.Unimplemented || !strings.Contains(status.Convert(err).Message(), "unknown service") {
		t.Fatalf("agents' address served the platform API: %v", err)
	}
}
