package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/pkg/promscrape"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// lockedBuffer is an output the agent writes from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// `line-agent run --metrics-addr` serves the agent's metrics: after a
// send through a real relay, the page counts it, shows the stream up and
// the helper's round trips (the sim driver runs through the bridge).
func TestRunServesMetrics(t *testing.T) {
	ctx := context.Background()
	srv, err := relay.New(relay.Options{DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
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
	args := []string{"run", "--data", dataDir, "--driver", "sim", "--sim-reply-delay", "1h", "--status-socket", "-"}

	// A public address is refused before anything runs.
	var refused lockedBuffer
	if code := realMain(ctx, append(args, "--metrics-addr", "0.0.0.0:9477"), &refused, &refused); code == 0 || !strings.Contains(refused.String(), "not a loopback address") {
		t.Fatalf("--metrics-addr 0.0.0.0:9477: exit %d, output:\n%s", code, refused.String())
	}

	metricsAddr := freeAddr(t)
	runCtx, cancel := context.WithCancel(ctx)
	var out lockedBuffer
	done := make(chan int, 1)
	go func() { done <- realMain(runCtx, append(args, "--metrics-addr", metricsAddr), &out, &out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("the agent did not stop")
		}
	})
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(20 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s not reached; agent output:\n%s", what, out.String())
			}
		}
	}
	waitFor("the agent connected", func() bool {
		as, err := srv.Agents(ctx)
		return err == nil && len(as) == 1 && as[0].Connected
	})
	send := &linev1.Command{Id: "metrics-1", Line: e2eLine, Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{e2ePeer}}},
		Deadline: timestamppb.New(time.Now().Add(20 * time.Second)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "counted"}}}
	if _, err := srv.SubmitCommand(ctx, send); err != nil {
		t.Fatal(err)
	}
	waitFor("the send succeeded", func() bool {
		v, err := srv.CommandView("metrics-1")
		return err == nil && v.State == "succeeded"
	})
	var page promscrape.Page
	waitFor("the page counting the send", func() bool {
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		page, err = promscrape.Get(sctx, "http://"+metricsAddr+"/metrics")
		n, _ := page.Value("line_agent_commands_total", "kind", "send_text", "result", "ok")
		return err == nil && n == 1
	})
	if up, _ := page.Value("line_agent_relay_stream_up"); up != 1 {
		t.Errorf("line_agent_relay_stream_up = %v, want 1", up)
	}
	// A first message to a person goes out as create-chat, after the
	// helper's handshake.
	for _, action := range []string{"line-agent-hello", "create-chat"} {
		if n, _ := page.Value("line_agent_helper_round_trip_seconds", "action", action, "result", "ok"); n != 1 {
			t.Errorf("helper %s round trips = %v, want 1", action, n)
		}
	}
	if n, ok := page.Value("line_agent_quota_sends_used"); !ok || n != 1 {
		t.Errorf("line_agent_quota_sends_used = %v (present %v), want 1", n, ok)
	}
}
