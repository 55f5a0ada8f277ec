package relay

import (
	"context"
	"math"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/pkg/promscrape"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// scrapeRelay reads the relay's metrics page over HTTP, as Prometheus would.
func scrapeRelay(t *testing.T, srv *Server) promscrape.Page {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	page, err := promscrape.Get(ctx, "http://"+srv.MetricsAddr()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return page
}

// wantMetric fails the test unless series name{labels} has value v.
func wantMetric(t *testing.T, page promscrape.Page, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := page.Value(name, labels...)
	if !ok || math.Abs(got-v) > 1e-9 {
		t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, v)
	}
}

// A relay on loopback with a connected agent, commands through the
// operator API and calls on the platform API (one with a bad token):
// the page counts each by route or method and code, the command
// transitions, the stored events and the open streams.
func TestMetricsCountAgentsCommandsAndAPICalls(t *testing.T) {
	const line = "+15550000001"
	srv := startRelay(t, "", Options{MetricsAddr: "127.0.0.1:0", ResultGrace: 10 * time.Millisecond})
	if srv.MetricsAddr() == "" {
		t.Fatal("no metrics address with Options.MetricsAddr set")
	}
	a := enrollAgent(t, srv, line)
	a.connect()

	if code, body := postCommand(t, srv, sendText("m1", line)); code != http.StatusAccepted {
		t.Fatalf("POST m1: %d %v", code, body)
	}
	if a.nextCommand().GetId() != "m1" {
		t.Fatal("m1 not dispatched")
	}
	eventually(t, "m1 dispatched in the store", func() bool {
		v, err := srv.CommandView("m1")
		return err == nil && v.State == stateDispatched
	})
	page := scrapeRelay(t, srv)
	wantMetric(t, page, 1, "line_relay_agents_connected")
	wantMetric(t, page, 1, "line_relay_commands_open", "state", stateDispatched)
	wantMetric(t, page, 0, "line_relay_commands_open", "state", stateQueued)

	a.succeed("m1", "GUID-m1")
	eventually(t, "m1 succeeded", func() bool {
		v, err := srv.CommandView("m1")
		return err == nil && v.State == stateSucceeded
	})
	// m2's deadline passes without a result: the relay fails it.
	late := `{"id":"m2","line":"` + line + `","chat_guid":"iMessage;-;+15550100","deadline":"` +
		time.Now().Add(300*time.Millisecond).UTC().Format(time.RFC3339Nano) + `","send_text":{"text":"late"}}`
	if code, body := postCommand(t, srv, late); code != http.StatusAccepted {
		t.Fatalf("POST m2: %d %v", code, body)
	}
	eventually(t, "m2 failed by the relay", func() bool {
		v, err := srv.CommandView("m2")
		return err == nil && v.State == stateFailed
	})
	if code, _ := httpDo(t, srv, http.MethodGet, "/v1/commands/m1", ""); code != http.StatusOK {
		t.Fatalf("GET m1: %d", code)
	}
	if code, _ := httpDo(t, srv, http.MethodGet, "/v1/commands/nope", ""); code != http.StatusNotFound {
		t.Fatalf("GET nope: %d", code)
	}
	if code, _ := httpDo(t, srv, http.MethodGet, "/v1/nothing-here", ""); code != http.StatusNotFound {
		t.Fatalf("GET an unknown path: %d", code)
	}
	if code, _ := httpDo(t, srv, http.MethodPost, "/v1/commands", `{"id":`); code != http.StatusBadRequest {
		t.Fatalf("POST a broken body: %d", code)
	}

	a.event(1, "GUID-in/0", "hello")
	a.event(1, "GUID-in/0", "hello") // the same event again: stored once
	if got := a.nextAck(); got != 1 {
		t.Fatalf("ack %d, want 1", got)
	}

	// The platform API: a bad token is refused; a good one holds a stream.
	cc := dial(t, srv)
	chats := imessagev1.NewChatServiceClient(cc)
	msgs := imessagev1.NewMessageServiceClient(cc)
	if _, err := chats.MarkChatRead(apiCtx(t, "lrk_wrong"), &imessagev1.MarkChatReadRequest{ChatGuid: "any;-;+15557654321"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bad token: %v", err)
	}
	subCtx, cancelSub := context.WithCancel(apiCtx(t, newAPIToken(t, srv, line)))
	defer cancelSub()
	st, err := msgs.SubscribeMessageEvents(subCtx, &imessagev1.SubscribeMessageEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil { // the opening heartbeat: the stream is up
		t.Fatal(err)
	}

	page = scrapeRelay(t, srv)
	wantMetric(t, page, 1, "line_relay_agents_connected")
	wantMetric(t, page, 2, "line_relay_commands_submitted_total", "kind", "send_text")
	wantMetric(t, page, 2, "line_relay_commands_dispatched_total")
	wantMetric(t, page, 1, "line_relay_commands_finished_total", "result", "ok")
	wantMetric(t, page, 1, "line_relay_commands_finished_total", "result", "DEADLINE_EXCEEDED")
	for _, state := range []string{stateQueued, stateDispatched, stateAccepted, stateInProgress} {
		wantMetric(t, page, 0, "line_relay_commands_open", "state", state)
	}
	wantMetric(t, page, 1, "line_relay_events_stored_total")
	wantMetric(t, page, 1, "line_relay_event_subscribers", "stream", "message")
	wantMetric(t, page, 2, "line_relay_http_requests_total", "route", "POST /v1/commands", "code", "202")
	wantMetric(t, page, 1, "line_relay_http_requests_total", "route", "POST /v1/commands", "code", "400")
	wantMetric(t, page, 1, "line_relay_http_requests_total", "route", "GET /v1/commands/{id}", "code", "200")
	wantMetric(t, page, 1, "line_relay_http_requests_total", "route", "GET /v1/commands/{id}", "code", "404")
	wantMetric(t, page, 1, "line_relay_http_requests_total", "route", "/", "code", "404")
	wantMetric(t, page, 6, "line_relay_http_requests_total")
	wantMetric(t, page, 1, "line_relay_grpc_requests_total", "method", "/photon.imessage.v1.ChatService/MarkChatRead", "code", "Unauthenticated")
	wantMetric(t, page, 1, "line_relay_grpc_requests_total", "method", "/line.v1.LineRelay/Enroll", "code", "OK")
	if _, ok := page.Value("line_relay_grpc_requests_total", "method", "/photon.imessage.v1.MessageService/SubscribeMessageEvents"); ok {
		t.Error("a stream still open was counted")
	}

	cancelSub()
	a.close()
	eventually(t, "the stream and the agent gone from the page", func() bool {
		page = scrapeRelay(t, srv)
		subs, _ := page.Value("line_relay_event_subscribers", "stream", "message")
		agents, _ := page.Value("line_relay_agents_connected")
		_, counted := page.Value("line_relay_grpc_requests_total", "method", "/photon.imessage.v1.MessageService/SubscribeMessageEvents", "code", "Canceled")
		return subs == 0 && agents == 0 && counted
	})
}

// The metrics listener serves GET /metrics only, and a relay without
// Options.MetricsAddr binds none.
func TestMetricsListenerServesOnlyMetrics(t *testing.T) {
	if addr := startRelay(t, "", Options{}).MetricsAddr(); addr != "" {
		t.Fatalf("metrics at %s without Options.MetricsAddr", addr)
	}
	srv := startRelay(t, "", Options{MetricsAddr: "127.0.0.1:0"})
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodGet, "/v1/agents", http.StatusNotFound},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, "http://"+srv.MetricsAddr()+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}
