package relay

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestHelloWelcome(t *testing.T) {
	srv := startRelay(t, "", Options{HeartbeatInterval: 3 * time.Second})
	a := enrollAgent(t, srv, "+15550001", " Bob@Example.com ")
	w := a.connect()
	if w.GetAgentId() != a.id || w.GetHeartbeatInterval().AsDuration() != 3*time.Second ||
		w.GetLimits().GetMaxUnackedEvents() != 1024 || w.GetLimits().GetMaxInFlightCommands() != 256 ||
		w.GetStoredEventSequence() != 0 || w.GetRelayVersion() == "" {
		t.Fatalf("Welcome %v", w)
	}
	// A health check follows at once so health is known early.
	if id := a.expect(a.cur.checks, "HealthCheck").GetHealthCheck().GetId(); id == "" {
		t.Fatal("health check without id")
	}
	v := agentView(t, srv, a.id)
	if !v.Connected || v.Healthy || v.Hostname != "mini-test" || v.Driver != "sim" || v.Version != "test" ||
		!slices.Equal(v.Capabilities, []string{"send_text", "typing"}) || len(v.Lines) != 2 || v.LastHeartbeat == nil {
		t.Fatalf("agent view %+v", v)
	}
}

func TestFirstFrameMustBeHello(t *testing.T) {
	srv := startRelay(t, "", Options{HelloTimeout: 300 * time.Millisecond})
	a := enrollAgent(t, srv, "+15550001")

	ts := a.open(a.token)
	ts.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: &linev1.Event{Sequence: 1, Key: "x"}}})
	if err := ts.ended(t); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("event before Hello: %v", err)
	}

	start := time.Now()
	ts = a.open(a.token)
	if err := ts.ended(t); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("no Hello: %v", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("stream closed after %s, before the Hello timeout", d)
	}

	// Hello for another agent's id is refused.
	b := enrollAgent(t, srv, "+15550002")
	ts = a.open(a.token)
	h := b.hello()
	ts.send(h)
	if err := ts.ended(t); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Hello with another agent id: %v", err)
	}
}

func TestNewerStreamReplacesOlder(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	old := a.cur
	a.connect()
	if err := old.ended(t); status.Code(err) != codes.Aborted {
		t.Fatalf("older stream ended with %v, want Aborted", err)
	}
	// The new stream is live: it receives commands.
	if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "c1", Line: "+15550001", Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}); err != nil {
		t.Fatal(err)
	}
	if got := a.nextCommand().GetId(); got != "c1" {
		t.Fatalf("got %q", got)
	}
	if !agentView(t, srv, a.id).Connected {
		t.Fatal("agent not connected after replacement")
	}
}

func TestWatchdogClosesSilentStream(t *testing.T) {
	const hb = 150 * time.Millisecond
	srv := startRelay(t, "", Options{HeartbeatInterval: hb})
	a := enrollAgent(t, srv, "+15550001")

	// An agent that keeps heartbeating stays up well past 2x the interval.
	a.connect()
	stop := time.After(5 * hb)
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		case <-time.After(hb / 2):
			a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Heartbeat{Heartbeat: &linev1.Heartbeat{}}})
		}
	}
	select {
	case <-a.cur.done:
		t.Fatalf("a heartbeating stream was closed: %v", a.cur.err)
	default:
	}
	// The relay heartbeats too.
	select {
	case <-a.cur.beats:
	case <-time.After(waitFor):
		t.Fatal("no heartbeat from the relay")
	}

	// Silence: torn down after about 2x the interval.
	start := time.Now()
	err := a.ended()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("silent stream ended with %v", err)
	}
	if d := time.Since(start); d < hb || d > 10*hb {
		t.Fatalf("watchdog fired after %s", d)
	}
	eventually(t, "agent disconnected", func() bool { return !agentView(t, srv, a.id).Connected })
}

func TestHealthChecks(t *testing.T) {
	srv := startRelay(t, "", Options{HealthCheckInterval: 100 * time.Millisecond, HealthMissedLimit: 2})
	a := enrollAgent(t, srv, "+15550001")
	a.autoHealth.Store(int32(linev1.HealthStatus_HEALTH_STATUS_DEGRADED))
	a.connect()
	eventually(t, "healthy", func() bool { return agentView(t, srv, a.id).Healthy })
	v := agentView(t, srv, a.id)
	if v.LastHealth == nil || v.LastHealth.Status != "DEGRADED" || len(v.LastHealth.Components) != 1 ||
		v.LastHealth.Components[0] != (ComponentView{Name: "chatdb", Status: "DEGRADED", Detail: "reading"}) {
		t.Fatalf("last health %+v", v.LastHealth)
	}

	// DOWN answered in time is unhealthy.
	a.autoHealth.Store(int32(linev1.HealthStatus_HEALTH_STATUS_DOWN))
	eventually(t, "unhealthy when DOWN", func() bool { return !agentView(t, srv, a.id).Healthy })
	a.autoHealth.Store(int32(linev1.HealthStatus_HEALTH_STATUS_OK))
	eventually(t, "healthy again", func() bool { return agentView(t, srv, a.id).Healthy })

	// Unanswered checks: unhealthy after the miss limit, still connected,
	// last report kept.
	a.autoHealth.Store(0)
	eventually(t, "unhealthy after missed checks", func() bool { return !agentView(t, srv, a.id).Healthy })
	v = agentView(t, srv, a.id)
	if !v.Connected || v.LastHealth == nil || v.LastHealth.Status != "OK" {
		t.Fatalf("after misses: %+v", v)
	}
	a.autoHealth.Store(int32(linev1.HealthStatus_HEALTH_STATUS_OK))
	eventually(t, "healthy after answering again", func() bool { return agentView(t, srv, a.id).Healthy })

	// Disconnect: unhealthy.
	a.close()
	eventually(t, "unhealthy when disconnected", func() bool {
		v := agentView(t, srv, a.id)
		return !v.Connected && !v.Healthy
	})
}

// GET /v1/agents shows a component's fix under "fix", apart from its
// detail (which the agent still ends with it), and leaves the key out
// when there is none.
func TestHealthComponentsShowTheirFix(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	down := linev1.HealthStatus_HEALTH_STATUS_DOWN
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: &linev1.HealthReport{Status: down, Components: []*linev1.HealthComponent{
		{Name: "messages", Status: down, Detail: "Messages is not running; fix: open Messages", Fix: "open Messages"},
		{Name: "chatdb", Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: "reading"},
	}}}})
	eventually(t, "the report taken", func() bool {
		v := agentView(t, srv, a.id)
		return v.LastHealth != nil && len(v.LastHealth.Components) == 2
	})
	code, b := httpDo(t, srv, http.MethodGet, "/v1/agents", "")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/agents: %d", code)
	}
	var got struct {
		Agents []struct {
			LastHealth struct {
				Components []map[string]any `json:"components"`
			} `json:"last_health"`
		} `json:"agents"`
	}
	if err := json.Unmarshal(b, &got); err != nil || len(got.Agents) != 1 {
		t.Fatalf("GET /v1/agents: %v\n%s", err, b)
	}
	comps := got.Agents[0].LastHealth.Components
	if len(comps) != 2 || comps[0]["fix"] != "open Messages" || comps[0]["detail"] != "Messages is not running; fix: open Messages" {
		t.Errorf("messages: %v; want its fix under \"fix\"", comps)
	}
	if _, ok := comps[1]["fix"]; ok {
		t.Errorf("chatdb, OK, has a fix key: %v", comps[1])
	}
}

func TestGoodbyeIsGraceful(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Goodbye{Goodbye: &linev1.Goodbye{Reason: "shutdown"}}})
	if err := a.cur.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := a.ended(); err != io.EOF {
		t.Fatalf("stream ended with %v", err)
	}
	var v AgentView
	eventually(t, "disconnect recorded", func() bool { v = agentView(t, srv, a.id); return v.LastDisconnect != nil })
	if !v.LastDisconnect.Graceful || v.LastDisconnect.Reason != "shutdown" || v.Connected {
		t.Fatalf("after goodbye: %+v %+v", v, v.LastDisconnect)
	}

	// A crash is not graceful.
	a.connect()
	a.close()
	eventually(t, "crash recorded", func() bool {
		v = agentView(t, srv, a.id)
		return v.LastDisconnect != nil && !v.Connected
	})
	if v.LastDisconnect.Graceful {
		t.Fatalf("a dropped stream was recorded as graceful: %+v", v.LastDisconnect)
	}
}

func TestCloseDrainsAndLeaksNothing(t *testing.T) {
	opts := Options{DataDir: t.TempDir(), Logger: testLogger(t), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	// A long poll in flight returns when the relay closes.
	polled := make(chan error, 1)
	go func() {
		_, err := srv.Events(context.Background(), 0, 10, time.Minute)
		polled <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-polled:
		if err != nil {
			t.Fatalf("long poll: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("long poll still waiting after Close")
	}
	select {
	case <-a.cur.drains:
	default:
		t.Error("no Drain before the stream closed")
	}
	if err := a.ended(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream ended with %v", err)
	}
	a.cc.Close()
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	goleak.VerifyNone(t)
}
