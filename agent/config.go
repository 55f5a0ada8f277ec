package agent

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// EnvPrefix is the prefix of every environment variable the agent reads.
const EnvPrefix = "LINE_AGENT"

// Config is the agent's whole configuration. Values come from the environment
// (LINE_AGENT_<NAME>), then flags override them. Fields tagged secret never
// appear in output: `line-agent config` prints them redacted.
type Config struct {
	// DataDir holds state.db, credentials.json and the spool.
	DataDir string `envconfig:"DATA_DIR" default:"" desc:"data directory (state.db, credentials, spool); default ~/Library/Application Support/line-agent"`
	// Relay overrides the relay address recorded at enrollment.
	Relay string `envconfig:"RELAY" desc:"relay gRPC address host:port, or several comma-separated (replicas, tried in order) (default: the one enrolled with)"`
	// CAFile is the CA that signs the relay's certificate; empty means the
	// system roots.
	CAFile string `envconfig:"CA_FILE" desc:"PEM file of the CA to trust for the relay (default: the one enrolled with, else system roots)"`
	// Plaintext drops TLS; only allowed when Relay is a loopback address.
	Plaintext bool `envconfig:"PLAINTEXT" desc:"talk to a loopback relay without TLS (development only)"`
	// Driver picks how Messages is reached: macos on a Mac, sim anywhere.
	Driver string `envconfig:"DRIVER" default:"macos" desc:"messages driver: macos or sim"`
	// Lines are the phone numbers or handles this agent sends through.
	Lines []string `envconfig:"LINES" desc:"comma-separated lines served (E.164 numbers or Apple ID handles); default: the driver's"`
	// ChatDB is chat.db's path; the sim creates its own under DataDir.
	ChatDB string `envconfig:"CHAT_DB" desc:"path of chat.db (default ~/Library/Messages/chat.db; sim: DATA_DIR/sim/chat.db)"`
	// Osascript and HelperAddr are what the Mac provides, configurable so
	// that the macOS driver can run against fakes (and unusual installs).
	Osascript  string `envconfig:"OSASCRIPT" default:"/usr/bin/osascript" desc:"macos: path of osascript"`
	HelperAddr string `envconfig:"HELPER_ADDR" desc:"macos: loopback address the private-API helper dials (default 127.0.0.1:45670+uid-501)"`
	// PS, Csrutil and Launchctl are the Mac's programs the health probes
	// and `line-agent doctor` run (docs/operations.md), configurable so
	// that they run against fakes off a Mac.
	PS        string `envconfig:"PS" default:"/bin/ps" desc:"macos: path of ps, run as 'ps -axo pid=,comm=' to see whether Messages runs"`
	Csrutil   string `envconfig:"CSRUTIL" default:"/usr/bin/csrutil" desc:"macos: path of csrutil, run by doctor as 'csrutil status' (SIP)"`
	Launchctl string `envconfig:"LAUNCHCTL" default:"/bin/launchctl" desc:"macos: path of launchctl, run by doctor as 'launchctl print gui/UID/LABEL'"`
	// HelperPeerCheck makes the bridge refuse a helper connection from
	// any process but Apple's Messages, told by Lsof, PS and Codesign
	// (docs/security.md, "Who may be the helper").
	HelperPeerCheck bool   `envconfig:"HELPER_PEER_CHECK" default:"true" desc:"macos: refuse helper connections from any process but Apple's Messages (lsof, ps, codesign); false accepts any local process"`
	Lsof            string `envconfig:"LSOF" default:"/usr/sbin/lsof" desc:"macos: path of lsof, run as 'lsof -nP -iTCP@127.0.0.1:PORT -sTCP:ESTABLISHED -Fpn' to name the process of a helper connection"`
	Codesign        string `envconfig:"CODESIGN" default:"/usr/bin/codesign" desc:"macos: path of codesign, run to check that a helper connection's process is Apple's Messages"`
	// HelperPacing is how writes to a BlueBubbles helper (one message per
	// socket read) are spaced: by its answers, or by BlueBubbles Server's
	// fixed 200 ms for an operator to fall back to (docs/bridge.md,
	// "Pacing").
	HelperPacing string `envconfig:"HELPER_PACING" default:"answers" desc:"macos: answers (the next helper request once the last is answered, or 50 ms) or fixed (200 ms between requests, as BlueBubbles Server)"`
	// MessagesRestartsPerHour and MessagesRestartMinInterval bound the
	// restarts of a hanging Messages, done with Osascript, Killall and
	// Open (docs/operations.md, "Messages restarts").
	MessagesRestartsPerHour    int           `envconfig:"MESSAGES_RESTARTS_PER_HOUR" default:"3" desc:"macos: at most this many restarts of a hanging Messages in any hour; 0 turns them off (the hang is still reported)"`
	MessagesRestartMinInterval time.Duration `envconfig:"MESSAGES_RESTART_MIN_INTERVAL" default:"10m" desc:"macos: at least this long between two restarts of a hanging Messages (0 means 10m)"`
	Killall                    string        `envconfig:"KILLALL" default:"/usr/bin/killall" desc:"macos: path of killall, run as 'killall -9 Messages' when a hanging Messages will not quit"`
	Open                       string        `envconfig:"OPEN" default:"/usr/bin/open" desc:"macos: path of open, run as 'open -g -a Messages' to start Messages again after a restart"`
	// DiskMinFree, DiskMinFreePercent and DiskDownFree are the disk
	// component's thresholds for the data directory's filesystem.
	DiskMinFree        ByteSize `envconfig:"DISK_MIN_FREE" default:"1GiB" desc:"disk component DEGRADED below this much free space where the data directory is"`
	DiskMinFreePercent Percent  `envconfig:"DISK_MIN_FREE_PERCENT" default:"5" desc:"disk component DEGRADED below this percentage free"`
	DiskDownFree       ByteSize `envconfig:"DISK_DOWN_FREE" default:"100MiB" desc:"disk component DOWN below this much free space (state.db writes fail soon after)"`
	// OutboxLagMax is how long the oldest unacknowledged event may wait
	// while the stream is up before the outbox component is DEGRADED.
	OutboxLagMax time.Duration `envconfig:"OUTBOX_LAG_MAX" default:"2m" desc:"outbox component DEGRADED when an event waits longer for the relay's ack with the stream up"`
	// MaxChats bounds how many chats run commands at once.
	MaxChats int `envconfig:"MAX_CHATS" default:"16" desc:"chats running commands concurrently"`
	// MaxQueued bounds commands waiting in the agent; beyond it new ones are
	// refused with UNAVAILABLE.
	MaxQueued int `envconfig:"MAX_QUEUED" default:"1024" desc:"commands queued in the agent at most"`
	// StatusSocket is where the agent serves its own health on the Mac
	// (grpc.health.v1 and AgentStatus): `line-agent status` and an
	// orchestrator read it there.
	StatusSocket string `envconfig:"STATUS_SOCKET" desc:"unix socket serving grpc.health.v1 and the agent's status (default DATA_DIR/status.sock; - turns it off)"`
	// MetricsAddr is where Prometheus metrics are served (GET /metrics),
	// loopback only: the page tells each line's traffic. On by default,
	// because an operator wants it; a port already taken is logged and
	// the agent runs without the page (docs/operations.md, "Metrics").
	MetricsAddr string `envconfig:"METRICS_ADDR" default:"127.0.0.1:9477" desc:"loopback host:port serving Prometheus metrics at /metrics; - or empty turns it off"`
	// MaxOutbox bounds events kept until acknowledged.
	MaxOutbox int `envconfig:"MAX_OUTBOX" default:"10000" desc:"unacknowledged events kept before reading chat.db pauses"`
	// ShutdownGrace is how long in-flight commands may finish after the first
	// SIGTERM/SIGINT.
	ShutdownGrace time.Duration `envconfig:"SHUTDOWN_GRACE" default:"20s" desc:"time in-flight commands get to finish on shutdown"`
	// BackoffBase and BackoffCap shape the full-jitter reconnect backoff.
	BackoffBase time.Duration `envconfig:"BACKOFF_BASE" default:"1s" desc:"reconnect backoff base"`
	BackoffCap  time.Duration `envconfig:"BACKOFF_CAP" default:"60s" desc:"reconnect backoff cap"`
	// AuthGrace is how long the relay may refuse the agent secret before
	// health declares the credential refused: a passing fault (a relay
	// restarted on a lost database, a proxy answering 401) must not look
	// like a credential to throw away. The agent keeps the credential and
	// keeps trying either way (docs/security.md).
	AuthGrace time.Duration `envconfig:"AUTH_GRACE" default:"10m" desc:"time the relay may refuse this agent's credential before health declares it refused (re-enroll then); the agent keeps it and keeps trying"`
	// JournalRetention is how long state.db keeps a finished command's
	// record after both its deadline and its finish (journal_prune.go):
	// what answers a redelivery and refuses a reused id. Zero is the
	// default; less than an hour is refused.
	JournalRetention time.Duration `envconfig:"JOURNAL_RETENTION" default:"720h" desc:"how long a finished command's record is kept in state.db after its deadline and its finish (answers a redelivered id, refuses a reused one); at least 1h"`
	// QuotaSends and QuotaNewConversations are the provider's quotas
	// (docs/quotas.md), per rolling 24 hours; zero or less is no limit.
	QuotaSends            int `envconfig:"QUOTA_SENDS" default:"5000" desc:"messages this agent may send per rolling 24 hours; 0 or less: no limit"`
	QuotaNewConversations int `envconfig:"QUOTA_NEW_CONVERSATIONS" default:"50" desc:"new conversations each line may start per rolling 24 hours; 0 or less: no limit"`
	// ReconcileSettle and ReconcileWait time the reconciliation of commands
	// a crash interrupted (docs/reliability.md): Messages' settling time,
	// after which no trace means none will come, and how long one whose
	// osascript run still lives is looked at again before it is IN_DOUBT.
	ReconcileSettle time.Duration `envconfig:"RECONCILE_SETTLE" default:"10s" desc:"after a crash: time Messages may still take to show a command whose sender is gone"`
	ReconcileWait   time.Duration `envconfig:"RECONCILE_WAIT" default:"2m" desc:"after a crash: how long a command whose osascript run still lives is looked at again before it is IN_DOUBT"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	// LogFormat is text, json or auto: log shippers read JSON lines from
	// launchd's log file, people read text on a terminal
	// (docs/operations.md, "Logs").
	LogFormat string `envconfig:"LOG_FORMAT" default:"auto" desc:"text, json or auto: text on a terminal, JSON anywhere else (a file, a pipe, launchd; the LaunchAgent's plist sets json)"`
	// Token is a project token for `enroll`, read from the environment when
	// no --token-file is given. Never logged.
	Token string `envconfig:"TOKEN" secret:"true" desc:"project token for enroll (prefer --token-file)"`

	// AttachmentsDir is Messages' attachments folder, the only place
	// attachment files are served from.
	AttachmentsDir string `envconfig:"ATTACHMENTS_DIR" desc:"Messages' attachments folder, the only one files are served from (default ~/Library/Messages/Attachments; sim: DATA_DIR/sim/Attachments)"`
	// AttachmentWait bounds how long a fetch waits for a file Messages is
	// still receiving.
	AttachmentWait time.Duration `envconfig:"ATTACHMENT_WAIT" default:"30s" desc:"time a fetched attachment may take to finish transferring before the fetch answers UNAVAILABLE"`

	// Sim configures the simulated Messages (driver sim).
	SimLatency    time.Duration `envconfig:"SIM_LATENCY" default:"20ms" desc:"sim: time from send to sent/delivered"`
	SimReplyDelay time.Duration `envconfig:"SIM_REPLY_DELAY" default:"300ms" desc:"sim: time before the simulated person replies"`
	SimLine       string        `envconfig:"SIM_LINE" default:"+15550000001" desc:"sim: the line the simulated account serves"`
	// SimBackgroundDelay is how long a simulated chat background upload
	// takes to become distributable.
	SimBackgroundDelay time.Duration `envconfig:"SIM_BACKGROUND_DELAY" default:"1500ms" desc:"sim: time a chat background takes to upload to iCloud"`
}

// LoadConfig reads the configuration from the environment.
func LoadConfig() (Config, error) {
	var c Config
	if err := envconfig.Process(EnvPrefix, &c); err != nil {
		// The setting's own typed error (ErrBadByteSize...) stays
		// reachable with errors.Is: envconfig's ParseError hides it.
		var pe *envconfig.ParseError
		if errors.As(err, &pe) && pe.Err != nil {
			return c, fmt.Errorf("config: %s: %w", pe.KeyName, pe.Err)
		}
		return c, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// Print writes the effective configuration, one setting a line, with secrets
// redacted, so an operator can see what the agent will do.
func (c Config) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "SETTING\tENV\tVALUE\n")
	v := reflect.ValueOf(c)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		env := EnvPrefix + "_" + f.Tag.Get("envconfig")
		val := fmt.Sprint(v.Field(i).Interface())
		if s, ok := v.Field(i).Interface().([]string); ok {
			val = strings.Join(s, ",")
		}
		if f.Tag.Get("secret") == "true" && val != "" {
			val = "[redacted]"
		}
		if val == "" {
			val = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, env, val)
	}
	return tw.Flush()
}

// StatusSocketPath is the status socket's path, "" when it is off.
func (c Config) StatusSocketPath() string {
	switch c.StatusSocket {
	case "-":
		return ""
	case "":
		return filepath.Join(c.DataDir, "status.sock")
	}
	return c.StatusSocket
}
