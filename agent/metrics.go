package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/pkg/metricsserve"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The agent's Prometheus metrics (docs/operations.md, "Metrics"), served
// at GET /metrics on a loopback address only: the page names the lines
// and how much each one sends, which is nobody's business off the Mac.
// Every metric comes from a hook that already runs (a result given, an
// ack recorded, a stream ended) or is read when the page is scraped; a
// hook costs a map operation and a counter, and none changes what the
// agent does.

// Buckets, in seconds. A command takes from milliseconds (a refusal) to
// minutes (a background's upload); an event waits from milliseconds to as
// long as the relay is away.
var (
	commandBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}
	lagBuckets     = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}
	helperBuckets  = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15, 60}
)

// metricsQueryTimeout bounds the state.db reads a scrape does (the
// quotas' counts).
const metricsQueryTimeout = time.Second

// Metrics is one agent's metrics on a registry of its own, so a test (or
// a second agent in one process) never shares counters with another.
// Create it with NewMetrics, hand it to Options.Metrics and, for the
// helper's round trips, to bridge.Options.Observer.
type Metrics struct {
	reg        *prometheus.Registry
	commands   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	settled    *prometheus.CounterVec
	pruned     prometheus.Counter
	inboundLag prometheus.Histogram
	reconnects *prometheus.CounterVec
	helper     *prometheus.HistogramVec

	mu sync.Mutex
	// src is what the scrape-time gauges read; guarded by mu.
	src metricSources
}

// metricSources are the parts of a running agent whose state the gauges
// read when the page is scraped; nil parts report nothing.
type metricSources struct {
	journal *Journal
	quotas  *Quotas
	session *Session
}

// NewMetrics returns the agent's metrics, registered on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "line_agent_commands_total",
			Help: "Commands given their final result by this agent, by kind and result (ok or the error code). A redelivered id answered again is not counted again.",
		}, []string{"kind", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "line_agent_command_duration_seconds",
			Help:    "Time from the relay handing a command to the agent to its final result, by kind.",
			Buckets: commandBuckets,
		}, []string{"kind"}),
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "line_agent_commands_settled_total",
			Help: "Commands an earlier process left running, settled after the restart from chat.db (never run again), by result.",
		}, []string{"result"}),
		inboundLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "line_agent_inbound_lag_seconds",
			Help:    "Time from an event's commit to the outbox (when the chat.db reader took the row) to the relay's acknowledgement of it.",
			Buckets: lagBuckets,
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "line_agent_journal_pruned_total",
			Help: "Finished command records deleted from state.db once older than LINE_AGENT_JOURNAL_RETENTION (after both their deadline and their finish).",
		}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "line_agent_relay_reconnects_total",
			Help: "Streams to the relay that ended (or failed to start) and were tried again, by why.",
		}, []string{"reason"}),
		helper: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "line_agent_helper_round_trip_seconds",
			Help:    "Private-API helper requests from write to answer or failure, by action and result (ok or the error code).",
			Buckets: helperBuckets,
		}, []string{"action", "result"}),
	}
	m.reg.MustRegister(m.commands, m.latency, m.settled, m.pruned, m.inboundLag, m.reconnects, m.helper, stateCollector{m})
	return m
}

// Registry is the registry the metrics are on, for serving them.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// CommandFinished counts a command's final result and how long it took
// (took < 0: unknown, not observed).
func (m *Metrics) CommandFinished(kind, result string, took time.Duration) {
	if kind == "" {
		kind = "unknown"
	}
	m.commands.WithLabelValues(kind, result).Inc()
	if took >= 0 {
		m.latency.WithLabelValues(kind).Observe(took.Seconds())
	}
}

// CommandSettled counts a command an earlier process left running,
// settled after the restart.
func (m *Metrics) CommandSettled(result string) { m.settled.WithLabelValues(result).Inc() }

// HelperRoundTrip observes one private-API helper request; it makes
// Metrics a bridge.RoundTripObserver.
func (m *Metrics) HelperRoundTrip(action, result string, took time.Duration) {
	m.helper.WithLabelValues(action, result).Observe(took.Seconds())
}

// commandsPruned counts finished command records the journal deleted.
func (m *Metrics) commandsPruned(n int) { m.pruned.Add(float64(n)) }

// eventAcked observes one acknowledged event's lag.
func (m *Metrics) eventAcked(lag time.Duration) { m.inboundLag.Observe(max(lag, 0).Seconds()) }

// streamEnded counts a stream that ended while the session goes on.
func (m *Metrics) streamEnded(err error) { m.reconnects.WithLabelValues(reconnectReason(err)).Inc() }

// commandObserver is m as the dispatcher's observer; nil when m is nil,
// so a nil *Metrics never becomes a non-nil interface.
func (m *Metrics) commandObserver() CommandObserver {
	if m == nil {
		return nil
	}
	return m
}

// resultName is a result's label: "ok" for a snapshot, else the error's
// code name (IN_DOUBT, QUOTA_EXCEEDED...).
func resultName(res *linev1.CommandResult) string {
	if e := res.GetError(); e != nil {
		return command.CodeName(e.GetCode())
	}
	return "ok"
}

// reconnectReason names why a stream ended, from a fixed vocabulary.
func reconnectReason(err error) string {
	switch {
	case err == nil:
		return "ended"
	case errors.Is(err, errWatchdog):
		return "watchdog"
	case errors.Is(err, errNoWelcome):
		return "no_welcome"
	case errors.Is(err, errRelayClosed):
		return "relay_closed"
	case errors.Is(err, errDrained):
		return "drained"
	case errors.Is(err, errCapabilities):
		return "capabilities_changed"
	}
	if st, ok := status.FromError(err); ok {
		return strings.ToLower(st.Code().String())
	}
	return "error"
}

// stateCollector reports the gauges read at scrape time: the outbox,
// the quotas, the relay stream.
type stateCollector struct{ m *Metrics }

var (
	descOutbox = prometheus.NewDesc("line_agent_outbox_events",
		"Events in the outbox awaiting the relay's acknowledgement.", nil, nil)
	descOutboxMax = prometheus.NewDesc("line_agent_outbox_max_events",
		"The outbox's bound (LINE_AGENT_MAX_OUTBOX); at it, reading chat.db pauses.", nil, nil)
	descStreamUp = prometheus.NewDesc("line_agent_relay_stream_up",
		"1 while the stream to the relay is up (Welcome received), else 0.", nil, nil)
	descSendsUsed = prometheus.NewDesc("line_agent_quota_sends_used",
		"Messages counted against the send quota in the rolling 24 hours.", nil, nil)
	descSendsLimit = prometheus.NewDesc("line_agent_quota_sends_limit",
		"The send quota per rolling 24 hours (absent without a limit).", nil, nil)
	descNewUsed = prometheus.NewDesc("line_agent_quota_new_conversations_used",
		"New conversations counted against the line's quota in the rolling 24 hours.", []string{"line"}, nil)
	descNewLimit = prometheus.NewDesc("line_agent_quota_new_conversations_limit",
		"The new-conversation quota of each line per rolling 24 hours (absent without a limit).", nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOutbox, descOutboxMax, descStreamUp, descSendsUsed, descSendsLimit, descNewUsed, descNewLimit} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	src := c.m.src
	c.m.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if j := src.journal; j != nil {
		gauge(descOutbox, float64(j.OutboxLen()))
		gauge(descOutboxMax, float64(j.maxOutbox))
	}
	if s := src.session; s != nil {
		up := 0.0
		if s.Connected() {
			up = 1
		}
		gauge(descStreamUp, up)
	}
	if q := src.quotas; q != nil {
		ctx, cancel := context.WithTimeout(context.Background(), metricsQueryTimeout)
		h, err := q.Headroom(ctx)
		cancel()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descSendsUsed, fmt.Errorf("quota counts unreadable: %w", err))
			return
		}
		gauge(descSendsUsed, float64(h.Sent))
		if q.limits.Sends > 0 {
			gauge(descSendsLimit, float64(q.limits.Sends))
		}
		for _, l := range q.lines {
			gauge(descNewUsed, float64(h.NewConversations[l]), l)
		}
		if q.limits.NewConversations > 0 {
			gauge(descNewLimit, float64(q.limits.NewConversations))
		}
	}
}

// watch points the scrape-time gauges at a running agent's parts.
func (m *Metrics) watch(src metricSources) {
	m.mu.Lock()
	m.src = src
	m.mu.Unlock()
}

// start wires m into a running agent (the session's ends, the gauges) and
// serves the page when the configuration asks for it. A listener that
// cannot bind is logged, not fatal: metrics never stop the agent. The
// returned stop ends the server; a nil m only returns a no-op.
func (m *Metrics) start(ctx context.Context, cfg Config, src metricSources, log *slog.Logger) (stop func()) {
	if m == nil {
		return func() {}
	}
	m.watch(src)
	if src.session != nil {
		src.session.o.OnStreamEnd = m.streamEnded
	}
	addr, err := cfg.MetricsListenAddr()
	if err != nil || addr == "" {
		return func() {}
	}
	bound, stop, err := serveMetrics(ctx, addr, m.reg, log)
	if err != nil {
		log.Warn("no metrics page", "err", err)
		return func() {}
	}
	log.Info("metrics served", "addr", "http://"+bound.String()+"/metrics")
	return stop
}

// MetricsAddrError is a metrics address the agent refuses to serve on.
type MetricsAddrError struct {
	Addr string
	// Why says what is wrong with it.
	Why string
}

func (e *MetricsAddrError) Error() string {
	return fmt.Sprintf("metrics address %q refused: %s (LINE_AGENT_METRICS_ADDR takes a loopback host:port such as 127.0.0.1:9477, or - to turn metrics off)", e.Addr, e.Why)
}

// MetricsListenAddr is the address the metrics page listens on, "" when
// it is off ("" or "-"). Anything but a loopback host is refused with a
// *MetricsAddrError: the page tells each line's traffic.
func (c Config) MetricsListenAddr() (string, error) {
	return checkMetricsAddr(c.MetricsAddr)
}

func checkMetricsAddr(addr string) (string, error) {
	if addr == "" || addr == "-" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", &MetricsAddrError{Addr: addr, Why: "not host:port"}
	}
	if port == "" {
		return "", &MetricsAddrError{Addr: addr, Why: "no port"}
	}
	if host == "localhost" {
		return addr, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", &MetricsAddrError{Addr: addr, Why: "the host must be a loopback IP address or localhost, not a name that could resolve elsewhere"}
	}
	if !ip.IsLoopback() {
		return "", &MetricsAddrError{Addr: addr, Why: "not a loopback address: the page would be reachable from the network"}
	}
	return addr, nil
}

// serveMetrics serves reg at GET /metrics (404 for every other path, 405
// for another method) on addr, a loopback address (checked again here),
// until ctx ends or stop is called; stop waits for the server to close.
// It returns the bound address (addr may name port 0).
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (bound net.Addr, stop func(), err error) {
	addr, err = checkMetricsAddr(addr)
	if err != nil {
		return nil, nil, err
	}
	if addr == "" {
		return nil, nil, &MetricsAddrError{Addr: addr, Why: "metrics are turned off"}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		// "localhost" resolved to something else.
		ln.Close()
		return nil, nil, &MetricsAddrError{Addr: addr, Why: "it bound " + ln.Addr().String() + ", not a loopback address"}
	}
	srv := metricsserve.Server(reg, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	ended := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-ended:
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	var once sync.Once
	return ln.Addr(), func() {
		once.Do(func() { close(ended) })
		<-done
	}, nil
}
