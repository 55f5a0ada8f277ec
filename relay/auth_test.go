package relay

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func newClient(cc *grpc.ClientConn) linev1.LineRelayClient { return linev1.NewLineRelayClient(cc) }

func enrollReq(tok string) *linev1.EnrollRequest {
	return &linev1.EnrollRequest{ProjectToken: tok, Hostname: "mini-1", Version: "test", Lines: []string{"+15550001"}}
}

func nowUTC() time.Time { return time.Now().UTC() }

// testClock is a settable Options.Now.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func TestEnroll(t *testing.T) {
	srv := startRelay(t, "", Options{TokenTTL: 30 * time.Minute})
	c := newClient(dial(t, srv))
	ctx := context.Background()
	tok := projectToken(t, srv)

	resp, err := c.Enroll(ctx, enrollReq(tok))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.GetAgentId(), "agt_") || resp.GetAgentSecret() == "" || resp.GetCredential().GetAccessToken() == "" {
		t.Fatalf("incomplete enrollment: %v", resp)
	}
	if ttl := time.Until(resp.GetCredential().GetExpiresAt().AsTime()); ttl < 29*time.Minute || ttl > 31*time.Minute {
		t.Errorf("token TTL %s, want about 30m", ttl)
	}
	// The project token enrolls a fleet: a second Mac gets its own identity.
	resp2, err := c.Enroll(ctx, enrollReq(tok))
	if err != nil || resp2.GetAgentId() == resp.GetAgentId() {
		t.Fatalf("second enrollment: %v %v", resp2, err)
	}

	for _, bad := range []string{"", "lrp_not-a-real-token-SECRETVALUE"} {
		_, err := c.Enroll(ctx, enrollReq(bad))
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("bad token %q: %v, want Unauthenticated", bad, err)
		}
		if bad != "" && strings.Contains(status.Convert(err).Message(), "SECRETVALUE") {
			t.Fatalf("the error echoes the token: %v", err)
		}
	}

	// Refresh: the secret buys a new token; anything else is refused.
	r, err := c.Refresh(ctx, &linev1.RefreshRequest{AgentId: resp.GetAgentId(), AgentSecret: resp.GetAgentSecret()})
	if err != nil || r.GetCredential().GetAccessToken() == "" || r.GetCredential().GetAccessToken() == resp.GetCredential().GetAccessToken() {
		t.Fatalf("refresh: %v %v", r, err)
	}
	for _, req := range []*linev1.RefreshRequest{
		{AgentId: resp.GetAgentId(), AgentSecret: "wrong"},
		{AgentId: "agt_unknown", AgentSecret: resp.GetAgentSecret()},
		{AgentId: resp2.GetAgentId(), AgentSecret: resp.GetAgentSecret()},
		{},
	} {
		if _, err := c.Refresh(ctx, req); status.Code(err) != codes.Unauthenticated {
			t.Errorf("refresh %v: %v, want Unauthenticated", req, err)
		}
	}
}

func TestConnectAuthentication(t *testing.T) {
	clock := &testClock{}
	srv := startRelay(t, "", Options{TokenTTL: time.Hour, Now: clock.Now})
	a := enrollAgent(t, srv, "+15550001")

	for name, tok := range map[string]string{"missing": "", "unknown": "lra_nope"} {
		ts := a.open(tok)
		_ = ts.send(a.hello())
		if err := ts.ended(t); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s token: %v, want Unauthenticated", name, err)
		}
	}

	// The enrolled token works; after its TTL it no longer does, and a
	// refreshed one does.
	if w := a.connect(); w.GetAgentId() != a.id {
		t.Fatalf("welcome for %q", w.GetAgentId())
	}
	a.close()
	clock.Advance(time.Hour + time.Second)
	ts := a.open(a.token)
	_ = ts.send(a.hello())
	if err := ts.ended(t); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: %v", err)
	}
	r, err := a.client.Refresh(context.Background(), &linev1.RefreshRequest{AgentId: a.id, AgentSecret: a.secret})
	if err != nil {
		t.Fatal(err)
	}
	a.token = r.GetCredential().GetAccessToken()
	a.connect()
}
