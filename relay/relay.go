// Package relay is line-relay, the reference relay for line-agent: it serves
// the LineRelay gRPC service (Enroll, Refresh and the Connect stream) that
// agents dial, keeps commands and events in SQLite or PostgreSQL
// (docs/scaling.md), and offers a small JSON operator API over HTTP to
// submit commands, read events and watch agents.
//
// It exists so the agent can be developed, tested and self-hosted without the
// cloud relay; the stream semantics it implements are written down in
// docs/protocol.md.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Version is reported to agents in Welcome and by "line-relay version"; the
// build sets it with -ldflags "-X github.com/line-agent/line-agent/relay.Version=...".
var Version = "dev"

// ErrNotFound is returned for an unknown command id, so callers can tell
// "no such command" from a failure of the relay.
var ErrNotFound = errors.New("relay: not found")

// Server is one relay: a gRPC listener for agents, an HTTP listener for
// operators and the store (SQLite or PostgreSQL) behind both. Create it with
// New, run it with Start, stop it with Close.
type Server struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	store *store
	pki   *devPKI
	hub   *hub
	feed  *notifier
	// metrics counts what the relay does (metrics.go).
	metrics *metrics
	// cmdDone wakes platform API calls waiting for their command's final
	// state (api_writes_wait.go).
	cmdDone commandWaiters
	// downloads joins each platform API download to the agent's upload of
	// its file (api_attachments_pipe.go).
	downloads downloadPipes
	// replica is this process's replica id (replica.go); fleet its part
	// among the replicas of a PostgreSQL store, nil on SQLite.
	replica string
	fleet   *fleet

	ctx    context.Context // canceled by Close: ends streams, long polls, the sweeper
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the relay starts itself

	sweepKick chan struct{}
	sweepWake atomic.Int64 // Options.Now clock, unix ns: a submit with an earlier deadline kicks the sweeper (runSweeper)
	sweepSeen atomic.Int64 // the earliest deadline submitted since the sweeper last looked (runSweeper)

	mu        sync.Mutex
	started   bool
	closed    bool
	grpcSrv   *grpc.Server
	apiSrv    *grpc.Server // nil unless Options.APIAddr is set
	apiLn     net.Listener
	httpSrv   *http.Server
	grpcLn    net.Listener
	httpLn    net.Listener
	closeOnce sync.Once
	closeErr  error
}

// New prepares a relay in opts.DataDir: it creates the dir, the dev PKI and
// the database if they are missing and reuses them otherwise. Nothing is
// bound until Start.
func New(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ensureDataDir(opts.DataDir); err != nil {
		return nil, err
	}
	pki, err := loadOrCreatePKI(opts.DataDir, opts.ExtraSANs, opts.Now())
	if err != nil {
		return nil, fmt.Errorf("relay: dev PKI: %w", err)
	}
	replica, err := replicaName(opts.ReplicaID)
	if err != nil {
		return nil, err
	}
	st, err := openStoreAt(opts.DataDir, opts.Store)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	st.origin = replica
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:      opts,
		log:       opts.Logger.With("component", "relay"),
		now:       opts.Now,
		store:     st,
		pki:       pki,
		hub:       newHub(),
		feed:      newNotifier(),
		ctx:       ctx,
		cancel:    cancel,
		sweepKick: make(chan struct{}, 1),
		replica:   replica,
	}
	s.sweepSeen.Store(math.MaxInt64)
	if st.d.notify != "" {
		s.fleet = newFleet(s)
	}
	s.metrics = newMetrics(s)
	return s, nil
}

func ensureDataDir(dir string) error {
	if dir == "" {
		return errors.New("relay: a data dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("relay: data dir: %w", err)
	}
	return nil
}

// Start binds the gRPC and HTTP addresses and serves both in the background.
// It returns once both listeners are bound, so GRPCAddr and HTTPAddr are
// usable right after. ctx only bounds the start itself; stop with Close.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("relay: Start after Close")
	}
	if s.started {
		return errors.New("relay: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", s.opts.GRPCAddr)
	if err != nil {
		return fmt.Errorf("relay: listen gRPC on %s: %w", s.opts.GRPCAddr, err)
	}
	hl, err := lc.Listen(ctx, "tcp", s.opts.HTTPAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("relay: listen HTTP on %s: %w", s.opts.HTTPAddr, err)
	}
	var al net.Listener
	if s.opts.APIAddr != "" {
		if al, err = lc.Listen(ctx, "tcp", s.opts.APIAddr); err != nil {
			gl.Close()
			hl.Close()
			return fmt.Errorf("relay: listen platform API on %s: %w", s.opts.APIAddr, err)
		}
	}
	s.grpcSrv = s.newGRPCServer(al == nil)
	linev1.RegisterLineRelayServer(s.grpcSrv, &service{s: s})
	if al == nil {
		s.registerAPI(s.grpcSrv)
	} else {
		s.apiSrv = s.newGRPCServer(true)
		s.registerAPI(s.apiSrv)
	}
	s.httpSrv = &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.grpcLn, s.httpLn, s.apiLn = gl, hl, al
	s.started = true
	if s.opts.MetricsAddr != "" {
		s.metrics.serve(ctx, s.opts.MetricsAddr, s.log, &s.wg)
	}
	if al != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.apiSrv.Serve(al); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				s.log.Error("platform API server stopped", "err", err)
			}
		}()
	}

	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		if err := s.grpcSrv.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("gRPC server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.runSweeper()
	}()
	if s.fleet != nil {
		s.fleet.start(&s.wg)
	}
	apiAddr := gl.Addr().String()
	if al != nil {
		apiAddr = al.Addr().String()
	}
	s.log.Info("relay started", "grpc", gl.Addr().String(), "api", apiAddr, "http", hl.Addr().String(), "data", s.opts.DataDir, "store", s.store.where, "replica", s.replica, "version", Version)
	return nil
}

// newGRPCServer is a TLS gRPC server with the relay's settings, for the
// agents' listener and, when Options.APIAddr is set, the platform API's.
// One that serves the API takes messages as large as an upload
// (UploadAttachment carries the whole file).
func (s *Server) newGRPCServer(api bool) *grpc.Server {
	recv := maxFrameBytes
	if api {
		recv = max(recv, s.opts.MaxUploadBytes+uploadOverhead)
	}
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.pki.server},
	}
	return grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		// The agent and the SDK ping every 30 s; allow down to 10 s and
		// pings without an active stream (between reconnects, an idle app)
		// instead of answering GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: grpcEnforcementMinPing, PermitWithoutStream: true}),
		// Our own pings find half-open connections the peer cannot report.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: grpcServerPingInterval, Timeout: grpcServerPingTimeout}),
		grpc.MaxRecvMsgSize(recv),
		grpc.MaxSendMsgSize(maxFrameBytes),
		// An idle connection holds no buffers of its own: each gives its
		// 32 KiB write buffer back after a flush, and reads go straight to
		// the TLS connection (which buffers its records already) instead
		// of through another 32 KiB. Most agents are idle most of the time;
		// a fleet's connections would otherwise hold both for nothing
		// (bench row 7g: relay memory per idle agent).
		grpc.SharedWriteBuffer(true),
		grpc.ReadBufferSize(0),
		// Stop (the fallback in Close) also waits for handlers, so Close
		// never returns with a stream goroutine still running.
		grpc.WaitForHandlers(true),
		grpc.ChainUnaryInterceptor(s.metrics.unary, s.apiUnaryAuth),
		grpc.ChainStreamInterceptor(s.metrics.stream, s.apiStreamAuth),
	)
}

// APIAddr is where the platform API is served: Options.APIAddr's bound
// address, or the agents' gRPC address when it was not set; "" before Start.
func (s *Server) APIAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.apiLn != nil:
		return s.apiLn.Addr().String()
	case s.grpcLn != nil:
		return s.grpcLn.Addr().String()
	}
	return ""
}

// GRPCAddr is the bound gRPC address (useful with port 0), or "" before Start.
func (s *Server) GRPCAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpcLn == nil {
		return ""
	}
	return s.grpcLn.Addr().String()
}

// HTTPAddr is the bound operator API address, or "" before Start.
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// CAFile is the path of the dev CA certificate agents must trust to dial
// this relay.
func (s *Server) CAFile() string { return s.pki.caFile }

// Close stops the relay gracefully: streams get a Drain and end, long polls
// return, in-flight HTTP requests finish, then the database is closed. It
// waits for every goroutine the relay started and is safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		started := s.started
		s.mu.Unlock()
		s.cancel()
		var errs []error
		if started {
			stopGRPC(s.grpcSrv)
			if s.apiSrv != nil {
				stopGRPC(s.apiSrv)
			}
			sctx, cancel := context.WithTimeout(context.Background(), gracefulStopWait)
			if err := s.httpSrv.Shutdown(sctx); err != nil {
				errs = append(errs, err)
				s.httpSrv.Close()
			}
			cancel()
			s.metrics.stop()
		}
		s.wg.Wait()
		if err := s.store.close(); err != nil {
			errs = append(errs, err)
		}
		s.closeErr = errors.Join(errs...)
		s.log.Info("relay stopped")
	})
	return s.closeErr
}

// stopGRPC stops srv gracefully, and at once after gracefulStopWait: a
// handler stuck in Send to a peer that stopped reading is unblocked by
// closing the transports.
func stopGRPC(srv *grpc.Server) {
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(gracefulStopWait)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		srv.Stop()
		<-stopped
	}
}

// notifier wakes every waiter at once: wait returns a channel that the next
// notify closes. Long polls use it to learn that new events were stored.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: make(chan struct{})} }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}
