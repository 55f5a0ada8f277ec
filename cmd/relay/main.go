// Command line-relay is the reference relay for line-agent: it serves the
// agents' gRPC stream and a JSON operator API, for development, tests and
// self-hosting.
//
//	line-relay serve --data DIR [--grpc-addr 127.0.0.1:7443] [--http-addr 127.0.0.1:7080] [--metrics-addr 127.0.0.1:9478]
//	line-relay token create --data DIR [--lines LINE,LINE,...]
//	line-relay line list --data DIR
//	line-relay line move --data DIR LINE AGENT
//	line-relay api-token create --data DIR --line LINE | --pool LINE,LINE,...
//	line-relay api-token list --data DIR
//	line-relay api-token revoke --data DIR ID
//	line-relay store copy --data DIR --to URL
//	line-relay version
//
// Every command that opens the relay's store takes --store (default
// $LINE_RELAY_STORE): a postgres:// URL keeps the state in PostgreSQL
// instead of DIR's relay.db (docs/scaling.md); then --data is needed only
// by serve, for the dev CA.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/line-agent/line-agent/relay"
)

const usage = `line-relay: the reference relay for line-agent

Usage:
  line-relay serve --data DIR [--grpc-addr 127.0.0.1:7443] [--http-addr 127.0.0.1:7080] [flags]
      Serve agents (gRPC over TLS with a dev CA in DIR) and the operator API
      (JSON over HTTP). Prints "ca: PATH" and the bound addresses on stdout;
      logs go to stderr. SIGINT or SIGTERM stops it gracefully.
  line-relay token create --data DIR [--lines LINE,LINE,...]
      Print a new project token for enrolling agents (stdout, nothing else).
      With --lines, agents enrolled with it may serve only those lines;
      without, an agent may claim any line no other agent holds (the
      single-Mac default). A line belongs to the first agent that claims it.
  line-relay line list --data DIR
      Print each bound line and the agent that holds it.
  line-relay line move --data DIR LINE AGENT
      Give LINE to AGENT (a replaced Mac, a line claimed by the wrong
      agent). The old holder stops getting its commands at once.
  line-relay api-token create --data DIR --line LINE | --pool LINE,LINE,...
      Print a token for the platform API (photon.imessage.v1, what the
      spectrum-ts SDK speaks). --line: every end user sees that one number.
      --pool: each end user gets one line of the pool and keeps it.
  line-relay api-token list --data DIR
      Print each API token's id, lines and state (never the token).
  line-relay api-token revoke --data DIR ID
      Refuse the token from now on, on every call and stream.
  line-relay store copy --data DIR | --store FILE|URL --to URL|FILE
      Copy the whole store (agents and their credentials, lines, commands,
      events and cursors, tokens) into a new, empty one: how a relay on
      relay.db moves to PostgreSQL. Stop every relay serving it first;
      then serve with --store set to the copy. The source is left as it
      was. See docs/scaling.md.
  line-relay version
      Print the version.

Each command but version also takes --store URL|FILE (default
$LINE_RELAY_STORE): postgres://USER@HOST/DB keeps the relay's state in
PostgreSQL (password from PGPASSWORD or ~/.pgpass, not the URL), a file
path in that SQLite file; empty is DIR/relay.db. With --store, only serve
needs --data (for the dev CA). See docs/scaling.md.

Run "line-relay serve -h" for the serve flags.
`

// storeEnv is the environment variable --store defaults to, so each
// command of one relay need not repeat the URL.
const storeEnv = "LINE_RELAY_STORE"

// storeFlags adds --data and --store to fs.
func storeFlags(fs *flag.FlagSet) (data, store *string) {
	data = fs.String("data", "", "data directory of the relay: the dev CA, and relay.db unless --store names the store")
	store = fs.String("store", "", "where the relay's state is: a postgres:// URL (PostgreSQL; the password in PGPASSWORD or ~/.pgpass), a SQLite file's path, or empty for relay.db in --data (default $"+storeEnv+")")
	// The environment's value is set after the flag is defined, not as its
	// default: the flag package prints a default in every usage message
	// (-h, a mistyped flag), and a URL with a password in it would be
	// printed with it.
	*store = os.Getenv(storeEnv)
	return data, store
}

// storage is where a command without a running server finds the store; ok
// is false (after saying so on stderr) when neither flag names one.
func storage(name, data, store string, stderr io.Writer) (relay.Storage, bool) {
	if data == "" && store == "" {
		fmt.Fprintf(stderr, "%s: --data or --store is required\n", name)
		return relay.Storage{}, false
	}
	return relay.Storage{DataDir: data, Store: store}, true
}

// exitCode carries a process exit status through run's error return.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit %d", int(c)) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var code exitCode
	switch {
	case err == nil:
	case errors.As(err, &code):
		os.Exit(int(code))
	default:
		fmt.Fprintln(os.Stderr, "line-relay:", err)
		os.Exit(1)
	}
}

// run is the whole CLI, separated from main so tests drive it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitCode(2)
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "token":
		if len(args) < 2 || args[1] != "create" {
			fmt.Fprintln(stderr, "usage: line-relay token create --data DIR")
			return exitCode(2)
		}
		return runTokenCreate(args[2:], stdout, stderr)
	case "api-token":
		if len(args) < 2 {
			fmt.Fprintln(stderr, "usage: line-relay api-token create|list|revoke --data DIR ...")
			return exitCode(2)
		}
		return runAPIToken(args[1], args[2:], stdout, stderr)
	case "line":
		if len(args) < 2 || (args[1] != "move" && args[1] != "list") {
			fmt.Fprintln(stderr, "usage: line-relay line list --data DIR | line-relay line move --data DIR LINE AGENT")
			return exitCode(2)
		}
		if args[1] == "list" {
			return runLineList(args[2:], stdout, stderr)
		}
		return runLineMove(args[2:], stdout, stderr)
	case "store":
		if len(args) < 2 || args[1] != "copy" {
			fmt.Fprintln(stderr, "usage: line-relay store copy --data DIR | --store FILE --to URL")
			return exitCode(2)
		}
		return runStoreCopy(ctx, args[2:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "line-relay %s\n", relay.Version)
		return nil
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "line-relay: unknown command %q\n\n%s", args[0], usage)
		return exitCode(2)
	}
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitCode(0)
		}
		return exitCode(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitCode(2)
	}
	return nil
}

// sanList is a repeatable --san flag.
type sanList []string

func (s *sanList) String() string     { return strings.Join(*s, ",") }
func (s *sanList) Set(v string) error { *s = append(*s, v); return nil }

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("line-relay serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data, store := storeFlags(fs)
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:7443", "address agents connect to (gRPC over TLS)")
	httpAddr := fs.String("http-addr", "127.0.0.1:7080", "operator API address (plain HTTP, no auth: keep it on loopback)")
	apiAddr := fs.String("api-addr", "", "platform API (photon.imessage.v1, for spectrum-ts apps) address, TLS; default: served on --grpc-addr")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9478", "Prometheus metrics address (GET /metrics, plain HTTP, no auth: keep it on loopback or a private network); empty turns it off")
	var sans sanList
	fs.Var(&sans, "san", "extra DNS name or IP for the server certificate (repeatable)")
	heartbeat := fs.Duration("heartbeat", relay.DefaultHeartbeatInterval, "heartbeat interval; a stream silent for twice this is closed")
	healthEvery := fs.Duration("health-interval", relay.DefaultHealthCheckInterval, "how often to send agents a health check")
	healthMissed := fs.Int("health-missed", relay.DefaultHealthMissedLimit, "unanswered health checks before an agent is unhealthy")
	tokenTTL := fs.Duration("token-ttl", relay.DefaultTokenTTL, "access token lifetime")
	cmdTimeout := fs.Duration("command-timeout", relay.DefaultCommandTimeout, "deadline for commands submitted without one")
	retention := fs.Duration("event-retention", relay.DefaultEventRetention, "how long events are kept (operator API and platform API catch-up); a platform API cursor older than this is refused and the app resubscribes live")
	cmdRetention := fs.Duration("command-retention", relay.DefaultCommandRetention, "how long a finished command is kept after its deadline (GET /v1/commands/{id}, and its id as an idempotency key); then it is pruned")
	uploadTTL := fs.Duration("upload-ttl", relay.DefaultUploadTTL, "how long a platform API UploadAttachment file is kept for the send that uses it")
	replicaID := fs.String("replica-id", os.Getenv("LINE_RELAY_REPLICA_ID"), "this relay's name among the replicas sharing one PostgreSQL --store (docs/scaling.md), shown in GET /v1/agents and the log; default $LINE_RELAY_REPLICA_ID, else the host name")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log JSON lines instead of text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *data == "" {
		fmt.Fprintln(stderr, "line-relay serve: --data is required (it holds the dev CA, and relay.db unless --store names the store)")
		return exitCode(2)
	}
	if *retention <= 0 {
		fmt.Fprintln(stderr, "line-relay serve: --event-retention must be positive")
		return exitCode(2)
	}
	if *cmdRetention <= 0 {
		fmt.Fprintln(stderr, "line-relay serve: --command-retention must be positive")
		return exitCode(2)
	}
	if *uploadTTL <= 0 {
		fmt.Fprintln(stderr, "line-relay serve: --upload-ttl must be positive")
		return exitCode(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "line-relay serve: bad --log-level %q\n", *logLevel)
		return exitCode(2)
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if *logJSON {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	srv, err := relay.New(relay.Options{
		DataDir:               dir,
		Store:                 *store,
		GRPCAddr:              *grpcAddr,
		HTTPAddr:              *httpAddr,
		APIAddr:               *apiAddr,
		MetricsAddr:           *metricsAddr,
		ExtraSANs:             sans,
		HeartbeatInterval:     *heartbeat,
		HealthCheckInterval:   *healthEvery,
		HealthMissedLimit:     *healthMissed,
		TokenTTL:              *tokenTTL,
		DefaultCommandTimeout: *cmdTimeout,
		EventRetention:        *retention,
		CommandRetention:      *cmdRetention,
		UploadTTL:             *uploadTTL,
		ReplicaID:             *replicaID,
		Logger:                slog.New(h),
	})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		return err
	}
	fmt.Fprintf(stdout, "ca: %s\ngrpc: %s\napi: %s\nhttp: %s\n", srv.CAFile(), srv.GRPCAddr(), srv.APIAddr(), srv.HTTPAddr())
	if a := srv.MetricsAddr(); a != "" {
		fmt.Fprintf(stdout, "metrics: %s\n", a)
	}
	<-ctx.Done()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("shutdown took longer than 30s")
	}
}

func runTokenCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("line-relay token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data, store := storeFlags(fs)
	lines := fs.String("lines", "", "comma-separated lines agents enrolled with this token may serve (default: any line no other agent holds)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	at, ok := storage("line-relay token create", *data, *store, stderr)
	if !ok {
		return exitCode(2)
	}
	var ls []string
	for _, l := range strings.Split(*lines, ",") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	tok, err := relay.CreateProjectToken(at, ls...)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func runLineList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("line-relay line list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data, store := storeFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	at, ok := storage("line-relay line list", *data, *store, stderr)
	if !ok {
		return exitCode(2)
	}
	lines, err := relay.ListLines(at)
	if err != nil {
		return err
	}
	for _, l := range lines {
		fmt.Fprintf(stdout, "%s\t%s\t%s\n", l.Line, l.AgentID, l.BoundAt.Format(time.RFC3339))
	}
	return nil
}

func runLineMove(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("line-relay line move", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data, store := storeFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitCode(0)
		}
		return exitCode(2)
	}
	if (*data == "" && *store == "") || fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: line-relay line move --data DIR | --store URL LINE AGENT")
		return exitCode(2)
	}
	from, err := relay.MoveLine(relay.Storage{DataDir: *data, Store: *store}, fs.Arg(0), fs.Arg(1))
	if err != nil {
		return err
	}
	if from == "" {
		from = "nobody"
	}
	fmt.Fprintf(stdout, "line %s moved from %s to %s\n", fs.Arg(0), from, fs.Arg(1))
	return nil
}

func runAPIToken(sub string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("line-relay api-token "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	data, store := storeFlags(fs)
	var line, pool *string
	if sub == "create" {
		line = fs.String("line", "", "the one line of a dedicated token")
		pool = fs.String("pool", "", "comma-separated lines of a shared pool")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitCode(0)
		}
		return exitCode(2)
	}
	at, ok := storage("line-relay api-token "+sub, *data, *store, stderr)
	if !ok {
		return exitCode(2)
	}
	switch sub {
	case "create":
		if (*line == "") == (*pool == "") || fs.NArg() > 0 {
			fmt.Fprintln(stderr, "usage: line-relay api-token create --data DIR --line LINE | --pool LINE,LINE,...")
			return exitCode(2)
		}
		lines, isPool := []string{*line}, false
		if *pool != "" {
			lines, isPool = nil, true
			for _, l := range strings.Split(*pool, ",") {
				if l = strings.TrimSpace(l); l != "" {
					lines = append(lines, l)
				}
			}
		}
		tok, id, err := relay.CreateAPIToken(at, lines, isPool)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		fmt.Fprintf(stderr, "created API token %s\n", id)
		return nil
	case "list":
		if fs.NArg() > 0 {
			return exitCode(2)
		}
		toks, err := relay.ListAPITokens(at)
		if err != nil {
			return err
		}
		for _, t := range toks {
			kind, state := "line", "active"
			if t.Pool {
				kind = "pool"
			}
			if !t.RevokedAt.IsZero() {
				state = "revoked " + t.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", t.ID, kind, strings.Join(t.Lines, ","), state)
		}
		return nil
	case "revoke":
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "usage: line-relay api-token revoke --data DIR ID")
			return exitCode(2)
		}
		if err := relay.RevokeAPIToken(at, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "API token %s revoked\n", fs.Arg(0))
		return nil
	}
	fmt.Fprintf(stderr, "line-relay api-token: unknown subcommand %q (create, list, revoke)\n", sub)
	return exitCode(2)
}

func runStoreCopy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("line-relay store copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data, store := storeFlags(fs)
	to := fs.String("to", "", "the new, empty store to copy into: a postgres:// URL (the password in PGPASSWORD or ~/.pgpass) or a SQLite file's path")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	from, ok := storage("line-relay store copy", *data, *store, stderr)
	if !ok {
		return exitCode(2)
	}
	if *to == "" {
		fmt.Fprintln(stderr, "line-relay store copy: --to is required (the new store)")
		return exitCode(2)
	}
	rep, err := relay.CopyStore(ctx, from, relay.Storage{Store: *to}, time.Now(), func(t relay.TableRows) {
		fmt.Fprintf(stdout, "%-17s %d rows\n", t.Name, t.Rows)
	})
	if err != nil {
		fmt.Fprintln(stdout, "nothing copied: the new store holds no row of the old one")
		return err
	}
	fmt.Fprintf(stdout, "committed: copied to %s (events continue after %d); serve it with --store, the old store is unchanged\n", rep.To, rep.EventHead)
	return nil
}
