package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/pkg/metricsserve"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The relay's Prometheus metrics (docs/operations.md, "Metrics"), on a
// listener of their own (Options.MetricsAddr), never on the operator or
// platform API's ports: the platform API may face the internet, and the
// operator API has no authentication to guard them with. Every series is
// a count by a fixed vocabulary (routes, gRPC methods, codes, states);
// none names a line, a chat or a token.

// metricsQueryTimeout bounds the store read a scrape does.
const metricsQueryTimeout = time.Second

// metrics is one relay's metrics on a registry of its own, so relays in
// one test process never share counters.
type metrics struct {
	reg          *prometheus.Registry
	httpRequests *prometheus.CounterVec
	grpcRequests *prometheus.CounterVec
	submitted    *prometheus.CounterVec
	dispatched   prometheus.Counter
	claims       prometheus.Counter
	finished     *prometheus.CounterVec
	eventsStored prometheus.Counter
	sweeps       prometheus.Counter
	subscribers  *prometheus.GaugeVec

	mu sync.Mutex
	// srv and ln are the metrics listener while it serves; guarded by mu.
	srv *http.Server
	ln  net.Listener
}

// newMetrics registers the relay's metrics; the gauges read s when
// scraped.
func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "line_relay_http_requests_total",
			Help: "Operator API requests by route (the pattern matched, \"/\" for no route) and HTTP status code.",
		}, []string{"route", "code"}),
		grpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "line_relay_grpc_requests_total",
			Help: "gRPC calls (the platform API and the agents' LineRelay service) by full method and status code, counted when they end.",
		}, []string{"method", "code"}),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "line_relay_commands_submitted_total",
			Help: "Commands stored for an agent (a repeated id is not counted again), by kind.",
		}, []string{"kind"}),
		dispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "line_relay_commands_dispatched_total",
			Help: "Commands sent to an agent's stream, redeliveries included.",
		}),
		claims: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "line_relay_command_claims_total",
			Help: "Reads of the command queue by agent streams (on connect, when a command is submitted for a line, when health changes what may go, after a result while the agent's in-flight window was full); against line_relay_commands_dispatched_total, the store's work per command sent.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "line_relay_commands_finished_total",
			Help: "Commands that reached their final state, by result: ok or the error code (DEADLINE_EXCEEDED for those the relay gave up on).",
		}, []string{"result"}),
		eventsStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "line_relay_events_stored_total",
			Help: "Events from agents stored for the first time (a replayed duplicate is not counted).",
		}),
		sweeps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "line_relay_sweeper_turns_total",
			Help: "Turns of the sweeper (deadlines, then retention): about one a second when idle, more only while deadlines fall due; a rate near the submit rate means submits keep waking it.",
		}),
		subscribers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "line_relay_event_subscribers",
			Help: "Platform API live event streams open now, by stream (message, group, chat, poll).",
		}, []string{"stream"}),
	}
	m.reg.MustRegister(m.httpRequests, m.grpcRequests, m.submitted, m.dispatched, m.claims, m.finished, m.eventsStored, m.sweeps, m.subscribers,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "line_relay_agents_connected",
			Help: "Agents with a live stream now.",
		}, func() float64 { return float64(s.hub.connected()) }),
		openCommands{s})
	if c := s.store.ckpt; c != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "line_relay_store_checkpoints_total",
				Help: "Background WAL checkpoints of the SQLite store (after commits, at most one per 20 ms); absent on PostgreSQL.",
			}, func() float64 { return float64(c.Runs()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "line_relay_store_checkpoint_failures_total",
				Help: "Background WAL checkpoints that failed (the writer's own checkpoint then bounds the WAL; writes report the store's trouble themselves).",
			}, func() float64 { return float64(c.Failures()) }))
	}
	return m
}

// connected counts the agents with a live stream.
func (h *hub) connected() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, a := range h.agents {
		if a.session != nil {
			n++
		}
	}
	return n
}

// openCommands reports the commands not yet final, by state, read from
// the store when scraped (the queue index answers it: final commands are
// not counted through).
type openCommands struct{ s *Server }

var descOpenCommands = prometheus.NewDesc("line_relay_commands_open",
	"Commands not yet final, by state (queued, dispatched, accepted, in_progress).", []string{"state"}, nil)

func (c openCommands) Describe(ch chan<- *prometheus.Desc) { ch <- descOpenCommands }

func (c openCommands) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), metricsQueryTimeout)
	defer cancel()
	counts, err := c.s.store.openCommandCounts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descOpenCommands, fmt.Errorf("count open commands: %w", err))
		return
	}
	for _, state := range []string{stateQueued, stateDispatched, stateAccepted, stateInProgress} {
		ch <- prometheus.MustNewConstMetric(descOpenCommands, prometheus.GaugeValue, float64(counts[state]), state)
	}
}

// openCommandCounts counts the commands in each state that is not final.
func (st *store) openCommandCounts(ctx context.Context) (map[string]int, error) {
	rows, err := st.db.QueryContext(ctx, `SELECT state, count(*) FROM commands WHERE state IN (?, ?, ?, ?) GROUP BY state`,
		stateQueued, stateDispatched, stateAccepted, stateInProgress)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, err
		}
		out[state] = n
	}
	return out, rows.Err()
}

// streamName names a platform API event stream's domain for the
// subscribers gauge.
func streamName(d eventDomain) string {
	switch d {
	case domainMessage:
		return "message"
	case domainGroup:
		return "group"
	case domainChat:
		return "chat"
	case domainPoll:
		return "poll"
	}
	return "other"
}

// subscribed counts a live event stream open until the returned func.
func (m *metrics) subscribed(d eventDomain) (done func()) {
	g := m.subscribers.WithLabelValues(streamName(d))
	g.Inc()
	return g.Dec
}

// result names a final result for line_relay_commands_finished_total. The
// code comes from the agent: one this relay's ErrorCode does not name (a
// bare number, from a newer or a faulty agent) is "OTHER", so no agent can
// add series without bound.
func resultLabel(errCode string) string {
	if errCode == "" {
		return "ok"
	}
	if _, known := linev1.ErrorCode_value["ERROR_CODE_"+errCode]; !known {
		return "OTHER"
	}
	return errCode
}

// unary and stream count every gRPC call by method and code. They come
// first in the chain, so a call refused by authentication is counted too.
func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	m.grpcRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := h(srv, ss)
	m.grpcRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return err
}

// httpCounted counts next's requests by the route the mux matched and the
// status written.
func (m *metrics) httpCounted(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := r.Pattern // set by the ServeMux on the request it was given
		if route == "" {
			route = "/"
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	})
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serve starts the metrics listener on addr. A listener that cannot bind
// is logged, not fatal: metrics never keep the relay from serving.
func (m *metrics) serve(ctx context.Context, addr string, log *slog.Logger, wg *sync.WaitGroup) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		log.Error("no metrics listener: the relay serves without /metrics", "addr", addr, "err", err)
		return
	}
	srv := metricsserve.Server(m.reg, log)
	m.mu.Lock()
	m.srv, m.ln = srv, ln
	m.mu.Unlock()
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		log.Warn("metrics served on a non-loopback address: keep it off the internet", "addr", ln.Addr().String())
	}
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	})
}

// stop closes the metrics listener, if it serves.
func (m *metrics) stop() {
	m.mu.Lock()
	srv := m.srv
	m.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
}

// MetricsAddr is the bound metrics address, or "" when metrics are not
// served (Options.MetricsAddr empty, or the listener could not bind).
func (s *Server) MetricsAddr() string {
	s.metrics.mu.Lock()
	defer s.metrics.mu.Unlock()
	if s.metrics.ln == nil {
		return ""
	}
	return s.metrics.ln.Addr().String()
}
