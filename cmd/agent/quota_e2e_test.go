package main

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

// startQuotaE2E is startE2E's relay, agent and simulated Messages with
// small quotas, so a test reaches them in a few sends.
func startQuotaE2E(t *testing.T, sends, newConversations int) *e2e {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := relay.New(relay.Options{DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0",
		HeartbeatInterval: 200 * time.Millisecond, HealthCheckInterval: 200 * time.Millisecond, Logger: log})
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
	dataDir := t.TempDir()
	if _, err := agent.Enroll(ctx, agent.EnrollOptions{DialOptions: agent.DialOptions{Addr: srv.GRPCAddr(), CAFile: srv.CAFile()}, Token: tok, DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	h := &e2e{t: t, relay: srv}
	setup := simSetup{Messages: func(m *sim.Messages) { h.m = m }, Helper: func(x *simhelper.Helper) { h.helper = x }}
	cfg := agent.Config{DataDir: dataDir, Driver: "sim", SimLine: e2eLine, SimLatency: 5 * time.Millisecond, SimReplyDelay: time.Hour,
		MaxChats: 4, MaxQueued: 64, MaxOutbox: 1000, ShutdownGrace: 5 * time.Second, BackoffBase: 50 * time.Millisecond, BackoffCap: time.Second,
		QuotaSends: sends, QuotaNewConversations: newConversations}
	be, err := openSim(ctx, cfg, log, setup)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: be, Logger: log})
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	stop, done := make(chan struct{}), make(chan error, 1)
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
	db, err := sql.Open("sqlite", "file:"+h.m.ChatDBPath()+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h.db = db
	h.waitAgent(func(v relay.AgentView) bool { return v.Connected })
	return h
}

// quotaHealth is the agent's quota component as the relay last saw it.
func (h *e2e) quotaHealth(want string) relay.ComponentView {
	h.t.Helper()
	var got relay.ComponentView
	h.waitAgent(func(v relay.AgentView) bool {
		if v.LastHealth == nil {
			return false
		}
		for _, c := range v.LastHealth.Components {
			if c.Name == "quota" {
				got = c
				return c.Status == want
			}
		}
		return false
	})
	return got
}

// Beyond a quota a command is refused before Messages sees it, and the
// refusal reaches the operator API as QUOTA_EXCEEDED with the moment a
// slot frees, and the platform API as RESOURCE_EXHAUSTED,
// dailyLimitExceeded and error-context-retry_after_seconds; health shows
// what is left.
func TestQuotaExceededEndToEnd(t *testing.T) {
	h := startQuotaE2E(t, 2, 1)
	ops := opclient.New(h.relay.HTTPAddr())
	ctx := context.Background()
	if c := h.quotaHealth("OK"); !strings.Contains(c.Detail, "sends in 24h: 0 of 2, 2 left") {
		t.Fatalf("quota health before any send: %+v", c)
	}

	before := time.Now()
	h.ok(cmd(e2ePeer, &linev1.SendText{Text: "first to a new person"}))
	after := time.Now()
	rows := h.counts()

	// A second new person: the line's one new conversation is used.
	stranger := cmd("+15557654399", &linev1.SendText{Text: "cold"})
	if _, _, err := ops.Submit(ctx, stranger); err != nil {
		t.Fatal(err)
	}
	v, err := ops.Final(ctx, stranger.Id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != "failed" || v.Error == nil || v.Error.Code != "QUOTA_EXCEEDED" {
		t.Fatalf("a second new conversation: %+v, want QUOTA_EXCEEDED", v)
	}
	if v.Error.RetryAt.Before(before.Add(agent.QuotaWindow)) || v.Error.RetryAt.After(after.Add(agent.QuotaWindow)) {
		t.Fatalf("retry_at %v, want a window after the first send (%v..%v)", v.Error.RetryAt, before, after)
	}
	if s := v.Error.RetryAfterSeconds; s < 86390 || s > 86400 {
		t.Fatalf("retry_after_seconds %d, want about a day", s)
	}
	if got := h.counts(); got != rows {
		t.Fatalf("a refused command changed chat.db: %s, was %s", got, rows)
	}

	// A reply in the existing conversation is no new one: it uses the last send.
	h.ok(cmd(e2eChat, &linev1.SendText{Text: "and again"}))
	h.quotaHealth("DOWN")
	rows = h.counts()

	app := h.platform()
	var trailer metadata.MD
	_, err = app.msgs.SendTextMessage(app.ctx(), &imessagev1.SendTextMessageRequest{ChatGuid: "any;-;" + e2ePeer, Text: "over the limit"}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.ResourceExhausted || first(trailer, "error-code") != "dailyLimitExceeded" || first(trailer, "x-retryable") != "false" {
		t.Fatalf("platform API over the limit: %v (error-code %q, x-retryable %q), want RESOURCE_EXHAUSTED dailyLimitExceeded", err,
			first(trailer, "error-code"), first(trailer, "x-retryable"))
	}
	secs, _ := strconv.Atoi(first(trailer, "error-context-retry_after_seconds"))
	if secs < 86300 || secs > 86400 {
		t.Fatalf("error-context-retry_after_seconds %q, want about a day", first(trailer, "error-context-retry_after_seconds"))
	}
	if got := h.counts(); got != rows {
		t.Fatalf("a refused platform send changed chat.db: %s, was %s", got, rows)
	}
}

// `line-agent config` shows the quota limits: the defaults, the
// environment's, and a flag over both.
func TestConfigShowsQuotaLimits(t *testing.T) {
	t.Setenv("LINE_AGENT_QUOTA_SENDS", "9")
	t.Setenv("LINE_AGENT_QUOTA_NEW_CONVERSATIONS", "0")
	code, out, errOut := run(t, "config", "--quota-sends", "700")
	if code != 0 {
		t.Fatalf("config exit %d: %s", code, errOut)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			fields[f[1]] = f[2]
		}
	}
	if fields["LINE_AGENT_QUOTA_SENDS"] != "700" || fields["LINE_AGENT_QUOTA_NEW_CONVERSATIONS"] != "0" {
		t.Fatalf("config shows quota sends %q and new conversations %q; want 700 and 0:\n%s",
			fields["LINE_AGENT_QUOTA_SENDS"], fields["LINE_AGENT_QUOTA_NEW_CONVERSATIONS"], out)
	}
	os.Unsetenv("LINE_AGENT_QUOTA_SENDS") // t.Setenv puts it back
	os.Unsetenv("LINE_AGENT_QUOTA_NEW_CONVERSATIONS")
	if cfg, err := agent.LoadConfig(); err != nil || cfg.QuotaSends != 5000 || cfg.QuotaNewConversations != 50 {
		t.Fatalf("default quotas %d and %d (%v), want 5000 and 50", cfg.QuotaSends, cfg.QuotaNewConversations, err)
	}
}
