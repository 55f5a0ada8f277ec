package relay

import (
	"errors"
	"log/slog"
	"time"

	"github.com/line-agent/line-agent/command"
)

// Defaults for the zero values of Options. They are what a production relay
// would use; tests shrink them to keep time-dependent behaviour fast.
const (
	DefaultHeartbeatInterval   = 15 * time.Second
	DefaultHealthCheckInterval = 10 * time.Second
	DefaultHealthMissedLimit   = 3
	DefaultTokenTTL            = time.Hour
	DefaultCommandTimeout      = command.DefaultTimeout
	DefaultHelloTimeout        = 10 * time.Second
	DefaultResultGrace         = 30 * time.Second
	// DefaultEventRetention keeps a week of events: a platform API app
	// away for longer resubscribes live (its catch-up cursor is refused).
	DefaultEventRetention = 7 * 24 * time.Hour
	// DefaultCommandRetention keeps finished commands for 30 days: an
	// operator looking into a complaint finds the command and its outcome,
	// and an idempotency key is remembered far beyond any client's retry.
	DefaultCommandRetention = 30 * 24 * time.Hour
	// DefaultEventHeartbeat is the idle frame interval of platform API
	// event streams, at the keepalive enforcement's minimum ping time.
	DefaultEventHeartbeat = 10 * time.Second
	// DefaultEventSendTimeout is how long a platform API event stream may
	// take to accept a frame before it is cut.
	DefaultEventSendTimeout = 30 * time.Second
	// DefaultUploadTTL is how long an UploadAttachment's file is kept for
	// the SendAttachmentMessage that follows it.
	DefaultUploadTTL = time.Hour
	// DefaultReplicaPoll is the backstop poll of replicas on PostgreSQL:
	// a notification lost delays a wake-up by at most about this.
	DefaultReplicaPoll = time.Second
)

// Limits the relay announces in Welcome and enforces itself.
const (
	maxUnackedEvents    = 1024
	maxInFlightCommands = 256
)

// Event acknowledgement batching: one EventAck per committed batch, a batch
// closing when the receive queue runs dry, at 256 events or after 50 ms.
const (
	eventAckBatch     = 256
	eventAckDelay     = 50 * time.Millisecond
	receiveQueue      = 256  // frames buffered between the receiver and the handler
	maxFramesPerDrain = 1024 // frames handled before heartbeats get a turn
)

// Operator API bounds.
const (
	defaultEventsPerPoll = 100
	maxEventsPerPoll     = 1000
	maxPollWait          = 60 * time.Second
	// maxCommandBody admits the largest attachment (100 MB) as base64 in
	// JSON with room for the rest of the command.
	maxCommandBody = 140 << 20
)

// Transport and lifecycle.
const (
	defaultListenAddr = "127.0.0.1:0"
	maxFrameBytes     = 64 << 20
	// maxCommandFrame bounds a Command frame once large file data is out
	// of it; the agent's gRPC receive limit (4 MiB) is well above it.
	maxCommandFrame = 1 << 20
	// inlineDataMax is the most file data a command carries inline; more
	// becomes a blob in blobChunkBytes chunks (blobs.go).
	inlineDataMax               = 256 << 10
	blobChunkBytes              = 512 << 10
	grpcEnforcementMinPing      = 10 * time.Second // the agent pings every 30 s
	grpcServerPingInterval      = 30 * time.Second
	grpcServerPingTimeout       = 10 * time.Second
	replacedStreamWait          = 5 * time.Second
	gracefulStopWait            = 5 * time.Second
	sweepMaxSleep               = time.Second
	serverCertRenewBeforeExpiry = 30 * 24 * time.Hour
)

// Spellings on the wire and in ids.
const (
	healthCheckIDPrefix = "hc_"
	drainReasonShutdown = "relay shutting down"
	replacedReason      = "replaced by a newer stream of the same agent"
	projectTokenPrefix  = "lrp_"
	agentSecretPrefix   = "lrs_"
	accessTokenPrefix   = "lra_"
	agentIDPrefix       = "agt_"
)

// Options configure a Server. The zero value of every field but DataDir picks
// a sensible default, so tests set only what they want to make fast.
type Options struct {
	// DataDir holds relay.db and the dev PKI (ca.pem, ca-key.pem, server.pem,
	// server-key.pem). It is created 0700 if missing and must survive restarts:
	// it is what lets a restarted relay keep commands, events and agents.
	DataDir string
	// Store, when set, is where commands, events and agents are kept
	// instead of DataDir's relay.db: a postgres:// (or postgresql://) URL
	// names a PostgreSQL database (docs/scaling.md; put the password in
	// PGPASSWORD or ~/.pgpass, not in the URL), anything else the path of
	// a SQLite file. The dev PKI stays in DataDir either way.
	Store string
	// GRPCAddr is where agents dial (host:port). Empty means 127.0.0.1:0, a
	// random loopback port: the relay binds only what it is told to.
	GRPCAddr string
	// APIAddr, when set, is where the platform API (photon.imessage.v1,
	// for spectrum-ts apps) listens, over TLS with the same certificate;
	// empty serves it on GRPCAddr beside the agents' service.
	APIAddr string
	// HTTPAddr is where the operator API listens (host:port). Empty means
	// 127.0.0.1:0; the API has no authentication, so keep it on loopback.
	HTTPAddr string
	// MetricsAddr, when set, is where Prometheus metrics are served (GET
	// /metrics, plain HTTP, no authentication: keep it on loopback or a
	// private network); empty serves none. A port that cannot be bound is
	// logged and the relay runs without metrics (metrics.go).
	MetricsAddr string
	// ExtraSANs are added to the server certificate next to 127.0.0.1, ::1,
	// localhost and the hostname, for agents that dial another name or IP.
	ExtraSANs []string
	// HeartbeatInterval is how often each side sends a Heartbeat; a stream
	// that carries no frame for twice this long is torn down. Default 15 s.
	HeartbeatInterval time.Duration
	// HealthCheckInterval is how often the relay asks a connected agent for a
	// HealthReport. Default 10 s.
	HealthCheckInterval time.Duration
	// HealthMissedLimit is how many health checks in a row may go unanswered
	// before the agent is reported unhealthy. Default 3.
	HealthMissedLimit int
	// TokenTTL is the lifetime of access tokens issued by Enroll and Refresh;
	// the agent refreshes at 80% of it. Default 1 h.
	TokenTTL time.Duration
	// DefaultCommandTimeout is the deadline given to a submitted command that
	// has none, so nothing waits forever. Default 120 s.
	DefaultCommandTimeout time.Duration
	// HelloTimeout bounds how long a new stream may take to send Hello, so a
	// client that connects and says nothing does not hold a slot. Default 10 s.
	HelloTimeout time.Duration
	// ResultGrace is how long after its deadline an accepted or in-progress
	// command may still get the agent's own result before the relay fails it
	// with DEADLINE_EXCEEDED (the agent enforces the deadline itself and its
	// truthful answer is preferred). Default 30 s.
	ResultGrace time.Duration
	// EventRetention is how long stored events are kept (for the operator
	// API and platform API catch-up alike); older ones are pruned, and a
	// platform API catch-up from a cursor whose events were pruned is
	// refused with FAILED_PRECONDITION. Default 7 days.
	EventRetention time.Duration
	// CommandRetention is how long a finished command is kept after its
	// deadline (every command is final by then, less ResultGrace); then it
	// is pruned, and its id, the idempotency key, is free again. Without
	// it the commands table would grow for as long as the relay runs.
	// Default 30 days.
	CommandRetention time.Duration
	// EventHeartbeat is how often every platform API event stream gets a
	// Heartbeat frame (and the caller's token is checked again). Default
	// 10 s.
	EventHeartbeat time.Duration
	// EventSendTimeout is how long a platform API event stream may go
	// without accepting a frame while frames wait for it; then the stream
	// ends with RESOURCE_EXHAUSTED and the app catches up when it
	// reconnects. Default 30 s.
	EventSendTimeout time.Duration
	// UploadTTL is how long a file uploaded with the platform API's
	// UploadAttachment is kept; a send that uses it keeps it at least until
	// that command ends. Expired uploads are pruned. Default 1 h.
	UploadTTL time.Duration
	// MaxUploadBytes caps an uploaded file; default and most
	// command.MaxAttachmentBytes, the cap of send_attachment itself.
	MaxUploadBytes int
	// Logger receives structured logs; nil means slog.Default(). Secrets are
	// never logged.
	Logger *slog.Logger
	// Now is the clock used for timestamps, token expiry and command
	// deadlines; nil means time.Now. Timers still run on the real clock.
	Now func() time.Time
	// ReplicaID names this relay among the replicas serving one PostgreSQL
	// store (docs/scaling.md): in its logs, in GET /v1/agents (which
	// replica holds each agent's stream) and in what it announces to the
	// others. The process adds a random suffix, so a replica restarted
	// under the same name is never taken for its previous run. Empty means
	// the host name; at most 64 bytes, no spaces.
	ReplicaID string
	// ReplicaPoll is how often a relay on PostgreSQL looks at the store
	// for what the other replicas' announcements would have said (the
	// backstop of a lost notification or a LISTEN connection that is
	// down) and records that it is alive; the others count the streams of
	// a replica silent for 5 polls as gone. Default 1 s. Unused on SQLite.
	ReplicaPoll time.Duration

	// noListen leaves the LISTEN connection out, so a test sees the poll
	// alone at work (replica_test.go).
	noListen bool
}

// withDefaults returns a copy of o with every zero field defaulted.
func (o Options) withDefaults() (Options, error) {
	if o.DataDir == "" {
		return o, errors.New("relay: Options.DataDir is required")
	}
	if o.GRPCAddr == "" {
		o.GRPCAddr = defaultListenAddr
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = defaultListenAddr
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.HealthCheckInterval <= 0 {
		o.HealthCheckInterval = DefaultHealthCheckInterval
	}
	if o.HealthMissedLimit <= 0 {
		o.HealthMissedLimit = DefaultHealthMissedLimit
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = DefaultTokenTTL
	}
	if o.DefaultCommandTimeout <= 0 {
		o.DefaultCommandTimeout = DefaultCommandTimeout
	}
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = DefaultHelloTimeout
	}
	if o.ResultGrace <= 0 {
		o.ResultGrace = DefaultResultGrace
	}
	if o.EventRetention <= 0 {
		o.EventRetention = DefaultEventRetention
	}
	if o.CommandRetention <= 0 {
		o.CommandRetention = DefaultCommandRetention
	}
	if o.EventHeartbeat <= 0 {
		o.EventHeartbeat = DefaultEventHeartbeat
	}
	if o.EventSendTimeout <= 0 {
		o.EventSendTimeout = DefaultEventSendTimeout
	}
	if o.UploadTTL <= 0 {
		o.UploadTTL = DefaultUploadTTL
	}
	if o.MaxUploadBytes <= 0 || o.MaxUploadBytes > command.MaxAttachmentBytes {
		o.MaxUploadBytes = command.MaxAttachmentBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ReplicaPoll <= 0 {
		o.ReplicaPoll = DefaultReplicaPoll
	}
	return o, nil
}
