package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/installer"
	"github.com/line-agent/line-agent/logging"
)

// configFlags registers the flags that override the environment's Config.
// Each is bound to its Config field (configFlag): an unset flag keeps the
// environment's value, and its -h line names the field's environment
// variable. The returned func applies what parsing cannot: the default
// data directory.
func configFlags(fs *flag.FlagSet, cfg *agent.Config) func() {
	b := configFlag{fs: fs, cfg: cfg}
	b.bind("data", (*stringFlag)(&cfg.DataDir), &cfg.DataDir, "the data directory `DIR` (state.db, credentials, spool)")
	b.bind("relay", (*stringFlag)(&cfg.Relay), &cfg.Relay, "relay gRPC address `HOST:PORT` (several comma-separated: replicas, tried in order)")
	b.bind("ca", (*stringFlag)(&cfg.CAFile), &cfg.CAFile, "PEM CA `FILE` to trust for the relay")
	b.bind("plaintext", (*boolFlag)(&cfg.Plaintext), &cfg.Plaintext, "no TLS; loopback relays only")
	b.bind("driver", (*stringFlag)(&cfg.Driver), &cfg.Driver, "messages `DRIVER`: macos or sim")
	b.bind("lines", (*listFlag)(&cfg.Lines), &cfg.Lines, "comma-separated `LINES` served")
	b.bind("chat-db", (*stringFlag)(&cfg.ChatDB), &cfg.ChatDB, "`PATH` of chat.db")
	b.bind("attachments-dir", (*stringFlag)(&cfg.AttachmentsDir), &cfg.AttachmentsDir, "Messages' attachments folder `DIR`, the only one files are served from")
	b.bind("log-level", (*stringFlag)(&cfg.LogLevel), &cfg.LogLevel, "log `LEVEL`: debug, info, warn or error")
	b.bind("log-format", (*stringFlag)(&cfg.LogFormat), &cfg.LogFormat, "log `FORMAT`: text, json or auto (text on a terminal, JSON anywhere else)")
	b.bind("metrics-addr", (*stringFlag)(&cfg.MetricsAddr), &cfg.MetricsAddr, "loopback `HOST:PORT` serving Prometheus metrics at /metrics; - or empty turns it off")
	b.bind("status-socket", (*stringFlag)(&cfg.StatusSocket), &cfg.StatusSocket, "unix socket `PATH` serving grpc.health.v1 and line-agent status (default DATA_DIR/status.sock; - turns it off)")
	b.bind("shutdown-grace", (*durationFlag)(&cfg.ShutdownGrace), &cfg.ShutdownGrace, "`DURATION` in-flight commands get to finish on shutdown")
	b.bind("quota-sends", (*intFlag)(&cfg.QuotaSends), &cfg.QuotaSends, "`N` messages this agent may send per rolling 24 hours; 0 or less: no limit")
	b.bind("quota-new-conversations", (*intFlag)(&cfg.QuotaNewConversations), &cfg.QuotaNewConversations, "`N` new conversations each line may start per rolling 24 hours; 0 or less: no limit")
	b.bind("sim-latency", (*durationFlag)(&cfg.SimLatency), &cfg.SimLatency, "sim: `DURATION` from send to sent, and again to delivered")
	b.bind("sim-reply-delay", (*durationFlag)(&cfg.SimReplyDelay), &cfg.SimReplyDelay, "sim: `DURATION` before the simulated person replies")
	b.bind("sim-line", (*stringFlag)(&cfg.SimLine), &cfg.SimLine, "sim: the `LINE` the simulated account serves")
	b.bind("sim-background-delay", (*durationFlag)(&cfg.SimBackgroundDelay), &cfg.SimBackgroundDelay, "sim: `DURATION` a chat background takes to upload to iCloud")
	return func() {
		if cfg.DataDir == "" {
			cfg.DataDir = defaultDataDir()
		}
	}
}

// configFlag defines flags bound to fields of one Config. It is the one
// place a flag's environment variable is named: the field's envconfig tag,
// appended to the usage as "(env LINE_AGENT_<TAG>)", so a new setting's flag
// shows its variable in -h without anyone writing it.
type configFlag struct {
	fs  *flag.FlagSet
	cfg *agent.Config
}

// bind defines flag name on v, which writes field (a pointer into the
// Config); field's current value, the environment's, is the default.
func (b configFlag) bind(name string, v flag.Value, field any, usage string) {
	b.fs.Var(v, name, usage+" (env "+b.env(field)+")")
}

// env is the environment variable of the Config field p points at.
func (b configFlag) env(p any) string {
	v := reflect.ValueOf(b.cfg).Elem()
	at := reflect.ValueOf(p).Pointer()
	for i := 0; i < v.NumField(); i++ {
		if v.Field(i).Addr().Pointer() == at && reflect.TypeOf(p).Elem() == v.Field(i).Type() {
			return agent.EnvPrefix + "_" + v.Type().Field(i).Tag.Get("envconfig")
		}
	}
	panic(fmt.Sprintf("configFlags: a flag bound to %T that is no field of agent.Config", p))
}

// The flag.Values of Config fields, writing the field itself.
type (
	stringFlag   string
	boolFlag     bool
	intFlag      int
	durationFlag time.Duration
	listFlag     []string
)

func (f *stringFlag) String() string     { return string(*f) }
func (f *stringFlag) Set(s string) error { *f = stringFlag(s); return nil }

func (f *boolFlag) String() string   { return strconv.FormatBool(bool(*f)) }
func (f *boolFlag) IsBoolFlag() bool { return true }
func (f *boolFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*f = boolFlag(v)
	return nil
}

func (f *intFlag) String() string { return strconv.Itoa(int(*f)) }
func (f *intFlag) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want a whole number")
	}
	*f = intFlag(v)
	return nil
}

func (f *durationFlag) String() string { return time.Duration(*f).String() }
func (f *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 500ms, 20s or 2m")
	}
	*f = durationFlag(v)
	return nil
}

func (f *listFlag) String() string     { return strings.Join(*f, ",") }
func (f *listFlag) Set(s string) error { *f = splitList(s); return nil }

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

// configLogger is the log of the commands that run Messages (run,
// selftest), as configured: LINE_AGENT_LOG_LEVEL and LINE_AGENT_LOG_FORMAT
// (or their flags), auto resolved by where w goes (logOutput), the command
// id of a line taken from its context (logging.WithCommand). A level or
// format the agent does not know is a usage error naming the valid ones,
// not a log in some other shape than the operator's shipper expects.
func configLogger(w io.Writer, cfg agent.Config) (*slog.Logger, error) {
	l, err := logging.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("LINE_AGENT_LOG_LEVEL or --log-level: %w", err)}
	}
	f, err := logging.ParseFormat(cfg.LogFormat)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("LINE_AGENT_LOG_FORMAT or --log-format: %w", err)}
	}
	return logging.New(w, logging.Options{Format: f.Resolve(logOutput(w)), Level: l}), nil
}

// newLogger is a logger at level (info when unknown) in the auto format,
// for the commands that only read (inspect) and for tests.
func newLogger(w io.Writer, level string) *slog.Logger {
	l, err := logging.ParseLevel(level)
	if err != nil {
		l = slog.LevelInfo
	}
	return logging.New(w, logging.Options{Format: logging.Auto.Resolve(logOutput(w)), Level: l})
}

// logOutput is where w goes, for the auto format: a terminal, and whether
// this process is the LaunchAgent (launchd sets XPC_SERVICE_NAME to the
// job's label), whose output is launchd's log file.
func logOutput(w io.Writer) logging.Output {
	return logging.Output{Terminal: logging.IsTerminal(w), Launchd: os.Getenv("XPC_SERVICE_NAME") == installer.Label}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("line-agent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
