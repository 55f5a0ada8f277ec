package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/pkg/promscrape"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// scrapeAgent serves m on an ephemeral loopback port for the test and
// scrapes it once over HTTP, as Prometheus would.
func scrapeAgent(t *testing.T, m *Metrics) promscrape.Page {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, stop, err := serveMetrics(t.Context(), "127.0.0.1:0", m.Registry(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	page, err := promscrape.Get(ctx, "http://"+addr.String()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return page
}

// want fails the test unless the page's series name{labels} has value v.
func want(t *testing.T, page promscrape.Page, v float64, name string, labels ...string) {
	t.Helper()
	got, ok := page.Value(name, labels...)
	if !ok || math.Abs(got-v) > 1e-9 {
		t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, v)
	}
}

// Commands through a real dispatcher and journal, scraped over HTTP: each
// final result is counted once by kind and result (a redelivery is not
// counted again), with its latency; the quota, outbox and inbound-lag
// metrics read the same journal.
func TestMetricsCountWhatTheDispatcherAnswered(t *testing.T) {
	ctx := context.Background()
	clk := newTestClock()
	j := openTestJournal(t, t.TempDir())
	j.now = clk.now
	m := NewMetrics()
	j.obs = m
	q := NewQuotas(j, QuotaOptions{Limits: QuotaLimits{Sends: 3, NewConversations: 10}, Now: clk.now, Lines: []string{testLine}})
	drv := &countingDriver{}
	out := newFrames()
	d := NewDispatcher(ctx, DispatcherOptions{Driver: drv, Journal: j, Quotas: q, Emit: out.emit, Lines: []string{testLine}, Logger: testLogger(t), Observer: m})
	m.watch(metricSources{journal: j, quotas: q})

	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("ok-%d", i)
		d.Submit(ctx, testCommand(id))
		if res := out.result(t, id, 5*time.Second); res.GetSnapshot() == nil {
			t.Fatalf("%s: %v", id, res)
		}
	}
	d.Submit(ctx, testCommand("ok-1")) // a redelivery, answered from the journal
	d.Submit(ctx, testCommand("over"))
	if res := out.result(t, "over", 5*time.Second); res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED {
		t.Fatalf("over the quota: %v", res)
	}
	elsewhere := testCommand("elsewhere")
	elsewhere.Line = "+15559999999"
	d.Submit(ctx, elsewhere)
	if res := out.result(t, "elsewhere", 5*time.Second); res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_MISROUTED {
		t.Fatalf("another line: %v", res)
	}
	d.Drain()
	d.Wait()
	answered := 0
	out.mu.Lock()
	for _, f := range out.all {
		if f.GetResult().GetCommandId() == "ok-1" {
			answered++
		}
	}
	out.mu.Unlock()
	if answered != 2 {
		t.Fatalf("ok-1 answered %d times, want 2 (its run and the redelivery)", answered)
	}

	// Two events committed at T, acknowledged 3 s later; one left waiting.
	evs := []*linev1.Event{{Key: "a", MessageGuid: "a"}, {Key: "b", MessageGuid: "b"}}
	if err := j.Commit(ctx, evs, []byte("c1")); err != nil {
		t.Fatal(err)
	}
	clk.set(clk.now().Add(3 * time.Second))
	if err := j.Ack(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := j.Commit(ctx, []*linev1.Event{{Key: "c", MessageGuid: "c"}}, []byte("c2")); err != nil {
		t.Fatal(err)
	}

	page := scrapeAgent(t, m)
	want(t, page, 3, "line_agent_commands_total", "kind", "send_text", "result", "ok")
	want(t, page, 1, "line_agent_commands_total", "kind", "send_text", "result", "QUOTA_EXCEEDED")
	want(t, page, 1, "line_agent_commands_total", "kind", "send_text", "result", "MISROUTED")
	want(t, page, 5, "line_agent_commands_total")
	want(t, page, 5, "line_agent_command_duration_seconds", "kind", "send_text")
	want(t, page, 3, "line_agent_quota_sends_used")
	want(t, page, 3, "line_agent_quota_sends_limit")
	want(t, page, 10, "line_agent_quota_new_conversations_limit")
	want(t, page, 1, "line_agent_quota_new_conversations_used", "line", testLine) // the first send started one
	want(t, page, 1, "line_agent_outbox_events")
	want(t, page, 2, "line_agent_inbound_lag_seconds")
	if sum := page["line_agent_inbound_lag_seconds"].GetMetric()[0].GetHistogram().GetSampleSum(); math.Abs(sum-6) > 1e-6 {
		t.Errorf("inbound lag sum %v s, want 6 (two events acknowledged 3 s after their commit)", sum)
	}
	if _, ok := page.Value("line_agent_relay_stream_up"); ok {
		t.Error("a stream gauge without a session")
	}
}

// A command an earlier process left running, settled IN_DOUBT at start-up,
// is counted as settled, not as a result the dispatcher gave.
func TestMetricsCountSettledCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j := openTestJournal(t, dir)
	if _, err := j.Begin(ctx, testCommand("left")); err != nil {
		t.Fatal(err)
	}
	if err := j.Start("left", -1); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j = openTestJournal(t, dir)
	m := NewMetrics()
	j.obs = m
	if ids, _, err := j.SettleInterrupted(ctx, func(*linev1.Command) bool { return false }); err != nil || len(ids) != 1 {
		t.Fatalf("settled %v, %v; want the one left running", ids, err)
	}
	// A command finished in the journal otherwise is not a settlement.
	if _, err := j.Begin(ctx, testCommand("plain")); err != nil {
		t.Fatal(err)
	}
	if err := j.Finish(ctx, &linev1.CommandResult{CommandId: "plain", Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: "G"}}}); err != nil {
		t.Fatal(err)
	}
	page := scrapeAgent(t, m)
	want(t, page, 1, "line_agent_commands_settled_total", "result", "IN_DOUBT")
	if _, ok := page.Value("line_agent_commands_settled_total", "result", "ok"); ok {
		t.Error("a command finished by Journal.Finish counted as settled")
	}
	if _, ok := page.Value("line_agent_commands_total"); ok {
		t.Error("a settled command counted among the dispatcher's results")
	}
}

// Streams that end are counted by why, through the session's hook: two
// refused before Welcome, one the relay closed; the stream up now is not.
func TestMetricsCountReconnectsByReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, func(st *relayStream) error {
			switch {
			case st.n <= 2:
				return status.Error(codes.Unavailable, "relay starting")
			case st.n == 3:
				return st.welcome(everyInterval())
			}
			return welcomeAndRead(everyInterval())(st)
		})
		m := NewMetrics()
		s := startSession(t, r, func(o *SessionOptions) { o.OnStreamEnd = m.streamEnded })
		m.watch(metricSources{session: s.Session})
		advance(5 * time.Second)
		if r.count() != 4 || !s.Connected() {
			t.Fatalf("%d streams, connected %v; want the fourth up", r.count(), s.Connected())
		}
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		page := promscrape.Page{}
		for _, f := range fams {
			page[f.GetName()] = f
		}
		want(t, page, 2, "line_agent_relay_reconnects_total", "reason", "unavailable")
		want(t, page, 1, "line_agent_relay_reconnects_total", "reason", "relay_closed")
		want(t, page, 3, "line_agent_relay_reconnects_total")
		want(t, page, 1, "line_agent_relay_stream_up")
	})
}

func TestReconnectReasonVocabulary(t *testing.T) {
	for err, reason := range map[error]string{
		errWatchdog:                       "watchdog",
		fmt.Errorf("x: %w", errNoWelcome): "no_welcome",
		errRelayClosed:                    "relay_closed",
		errDrained:                        "drained",
		errCapabilities:                   "capabilities_changed",
		status.Error(codes.Unauthenticated, "bad token"):                       "unauthenticated",
		fmt.Errorf("open stream: %w", status.Error(codes.Unavailable, "down")): "unavailable",
		errors.New("journal: disk full"):                                       "error",
	} {
		if got := reconnectReason(err); got != reason {
			t.Errorf("reconnectReason(%v) = %q, want %q", err, got, reason)
		}
	}
}

// Only loopback addresses are served: a page that tells each line's
// traffic must not be reachable from the network. "-" and "" turn it off.
func TestMetricsAddressMustBeLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":9477", "192.0.2.10:9477", "[::]:9477", "example.com:9477", "127.0.0.1", "127.0.0.1:"} {
		_, err := Config{MetricsAddr: addr}.MetricsListenAddr()
		var refused *MetricsAddrError
		if !errors.As(err, &refused) || refused.Addr != addr {
			t.Errorf("%q: %v, want a *MetricsAddrError", addr, err)
		}
		if _, _, err := serveMetrics(t.Context(), addr, NewMetrics().Registry(), testLogger(t)); !errors.As(err, &refused) {
			t.Errorf("serveMetrics(%q): %v, want a *MetricsAddrError", addr, err)
		}
	}
	for addr, listen := range map[string]string{"127.0.0.1:9477": "127.0.0.1:9477", "[::1]:9477": "[::1]:9477", "localhost:9477": "localhost:9477", "-": "", "": ""} {
		if got, err := (Config{MetricsAddr: addr}).MetricsListenAddr(); err != nil || got != listen {
			t.Errorf("%q: %q, %v; want %q", addr, got, err, listen)
		}
	}
	if _, err := New(Options{Config: Config{DataDir: t.TempDir(), MetricsAddr: "0.0.0.0:9477"}}); !errors.As(err, new(*MetricsAddrError)) {
		t.Errorf("New with a public metrics address: %v, want a *MetricsAddrError", err)
	}
}

// The server answers GET /metrics only.
func TestMetricsServerServesOnlyTheMetricsPath(t *testing.T) {
	addr, stop, err := serveMetrics(t.Context(), "127.0.0.1:0", NewMetrics().Registry(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, "/metrics", http.StatusOK},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/debug/pprof/", http.StatusNotFound},
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, "http://"+addr.String()+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
	}
}
