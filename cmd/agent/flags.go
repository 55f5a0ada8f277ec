package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/line-agent/line-agent/agent"
)

// configFlags registers the flags that override the environment's Config.
// Only flags the user set override: an unset flag keeps the env value.
func configFlags(fs *flag.FlagSet, cfg *agent.Config) func() {
	data := fs.String("data", cfg.DataDir, "data directory (env LINE_AGENT_DATA_DIR)")
	relay := fs.String("relay", cfg.Relay, "relay gRPC address host:port (env LINE_AGENT_RELAY)")
	ca := fs.String("ca", cfg.CAFile, "PEM CA file to trust for the relay (env LINE_AGENT_CA_FILE)")
	plain := fs.Bool("plaintext", cfg.Plaintext, "no TLS; loopback relays only (env LINE_AGENT_PLAINTEXT)")
	driver := fs.String("driver", cfg.Driver, "messages driver: macos or sim (env LINE_AGENT_DRIVER)")
	lines := fs.String("lines", strings.Join(cfg.Lines, ","), "comma-separated lines served (env LINE_AGENT_LINES)")
	chatdb := fs.String("chat-db", cfg.ChatDB, "path of chat.db (env LINE_AGENT_CHAT_DB)")
	attachments := fs.String("attachments-dir", cfg.AttachmentsDir, "Messages' attachments folder, the only one files are served from (env LINE_AGENT_ATTACHMENTS_DIR)")
	logLevel := fs.String("log-level", cfg.LogLevel, "debug, info, warn or error (env LINE_AGENT_LOG_LEVEL)")
	statusSocket := fs.String("status-socket", cfg.StatusSocket, "unix socket serving grpc.health.v1 and line-agent status (default DATA_DIR/status.sock; - turns it off) (env LINE_AGENT_STATUS_SOCKET)")
	grace := fs.Duration("shutdown-grace", cfg.ShutdownGrace, "time in-flight commands get on shutdown (env LINE_AGENT_SHUTDOWN_GRACE)")
	quotaSends := fs.Int("quota-sends", cfg.QuotaSends, "messages this agent may send per rolling 24 hours, 0 or less: no limit (env LINE_AGENT_QUOTA_SENDS)")
	quotaNew := fs.Int("quota-new-conversations", cfg.QuotaNewConversations, "new conversations each line may start per rolling 24 hours, 0 or less: no limit (env LINE_AGENT_QUOTA_NEW_CONVERSATIONS)")
	simLatency := fs.Duration("sim-latency", cfg.SimLatency, "sim: time from send to sent/delivered (env LINE_AGENT_SIM_LATENCY)")
	simReply := fs.Duration("sim-reply-delay", cfg.SimReplyDelay, "sim: time before the simulated person replies (env LINE_AGENT_SIM_REPLY_DELAY)")
	simLine := fs.String("sim-line", cfg.SimLine, "sim: the line the simulated account serves (env LINE_AGENT_SIM_LINE)")
	simBackground := fs.Duration("sim-background-delay", cfg.SimBackgroundDelay, "sim: time a chat background takes to upload to iCloud (env LINE_AGENT_SIM_BACKGROUND_DELAY)")
	return func() {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		str := func(name string, dst *string, v string) {
			if set[name] {
				*dst = v
			}
		}
		str("data", &cfg.DataDir, *data)
		str("relay", &cfg.Relay, *relay)
		str("ca", &cfg.CAFile, *ca)
		str("driver", &cfg.Driver, *driver)
		str("chat-db", &cfg.ChatDB, *chatdb)
		str("attachments-dir", &cfg.AttachmentsDir, *attachments)
		str("log-level", &cfg.LogLevel, *logLevel)
		str("status-socket", &cfg.StatusSocket, *statusSocket)
		str("sim-line", &cfg.SimLine, *simLine)
		if set["plaintext"] {
			cfg.Plaintext = *plain
		}
		if set["lines"] {
			cfg.Lines = splitList(*lines)
		}
		if set["quota-sends"] {
			cfg.QuotaSends = *quotaSends
		}
		if set["quota-new-conversations"] {
			cfg.QuotaNewConversations = *quotaNew
		}
		dur := func(name string, dst *time.Duration, v time.Duration) {
			if set[name] {
				*dst = v
			}
		}
		dur("shutdown-grace", &cfg.ShutdownGrace, *grace)
		dur("sim-latency", &cfg.SimLatency, *simLatency)
		dur("sim-reply-delay", &cfg.SimReplyDelay, *simReply)
		dur("sim-background-delay", &cfg.SimBackgroundDelay, *simBackground)
		if cfg.DataDir == "" {
			cfg.DataDir = defaultDataDir()
		}
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// defaultDataDir is where a LaunchAgent keeps its state on a Mac.
func defaultDataDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return "line-agent-data"
	}
	return filepath.Join(home, "Library", "Application Support", "line-agent")
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("line-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
