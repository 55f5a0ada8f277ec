package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/installer"
	"github.com/line-agent/line-agent/logging"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// `line-agent selftest` proves, on the Mac it runs on, the path a real
// message takes (docs/operations.md, "Self-test"): it sends a text to a
// handle the operator owns, waits for chat.db to show the row sent and then
// delivered, and, with the private-API helper connected, puts a tapback on
// it and finds the tapback's row. It runs in-process, on the same Backend
// `line-agent run` builds (openBackend), with the same drivers and the
// same chat.db confirmer, but outside the agent: no relay, no journal. So
// that it never fights a running agent over Messages (two senders, one
// helper port), it refuses to start while the agent's status socket
// answers, unless --allow-running.

// Names of the self-test's steps, in the order they run.
const (
	stepOpen       = "open"
	stepHelper     = "helper"
	stepReachable  = "reachable"
	stepSend       = "send"
	stepDelivered  = "delivered"
	stepTapback    = "tapback"
	stepTapbackRow = "tapback-row"
)

// Results of a step.
const (
	resultPass = "PASS"
	resultFail = "FAIL"
	resultSkip = "SKIP"
)

// selftestTapback is the tapback the self-test puts on its message.
const selftestTapback = "like"

// selftestHelperWait is --helper-wait's default: how long the private-API
// helper may take to dial the self-test's bridge (on a Mac it reconnects to
// a new listener on its own schedule). At most half the time left goes to
// it, so that the send has the rest.
const selftestHelperWait = 15 * time.Second

// selftestPoll is how often chat.db is read while a step waits on it.
const selftestPoll = 200 * time.Millisecond

// ErrAgentRunning is a self-test refused because an agent answers on the
// data directory's status socket: both would drive Messages at once.
var ErrAgentRunning = errors.New("an agent is running on this data directory")

// backendOpener builds the Backend the self-test drives (openBackend;
// tests pass one with a simSetup).
type backendOpener func(ctx context.Context, cfg agent.Config, log *slog.Logger) (agent.Backend, error)

// messageRows is what the self-test reads back from chat.db, through the
// backend's own reader (*chatdb.Reader).
type messageRows interface {
	Path() string
	LookupMessage(ctx context.Context, guid string) (chatdb.MessageState, error)
	FindTapback(ctx context.Context, target string, part, code int) (chatdb.MessageState, error)
}

// stepResult is one row of the table, and of --json's list.
type stepResult struct {
	Step   string `json:"step"`
	Result string `json:"result"`
	// Millis is how long the step took.
	Millis int64  `json:"ms"`
	Detail string `json:"detail"`
}

// selftestReport is --json's document.
type selftestReport struct {
	OK     bool         `json:"ok"`
	Driver string       `json:"driver"`
	To     string       `json:"to"`
	Steps  []stepResult `json:"steps"`
}

// runSelftest is `line-agent selftest`, on the Backend `run` builds.
func runSelftest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return selftest(ctx, openBackend, args, stdout, stderr)
}

// selftest is runSelftest with the backend's opener given: the tests open
// the simulated Messages with knobs the command line does not have (a
// handle not on iMessage, no helper).
func selftest(ctx context.Context, open backendOpener, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	fs := newFlagSet("selftest", stderr)
	apply := configFlags(fs, &cfg)
	to := fs.String("to", "", "the `HANDLE` (phone number or email) to message: one the operator owns, on another Apple ID than this Mac's (required)")
	timeout := fs.Duration("timeout", 60*time.Second, "`DURATION` the whole self-test may take")
	asJSON := fs.Bool("json", false, "print the steps as JSON {ok, driver, to, steps: [{step, result, ms, detail}]}")
	helperWait := fs.Duration("helper-wait", selftestHelperWait, "`DURATION` the private-API helper may take to connect (at most half the time left)")
	allowRunning := fs.Bool("allow-running", false, "run although an agent answers on the status socket (both then drive Messages; on a Mac the agent holds the helper's port)")
	if err := parse(fs, args); err != nil {
		return err
	}
	apply()
	agent.EnrolledLines(&cfg)
	if *to == "" {
		return usageError("--to HANDLE is required: a phone number or email address you own, reachable on iMessage")
	}
	handle, herr := command.NormalizeHandle(*to)
	if herr != nil {
		return &exitError{code: 2, err: fmt.Errorf("--to: %w", herr)}
	}
	if *timeout <= 0 || *helperWait < 0 {
		return usageError("--timeout must be positive and --helper-wait not negative")
	}
	if !levelGiven(fs, &cfg) {
		// The table is the output: the backend's own lines (the helper
		// coming and going as the self-test opens and closes) would bury
		// it. Errors only, unless the operator chose a level.
		cfg.LogLevel = "error"
	}
	log, err := configLogger(stderr, cfg)
	if err != nil {
		return err
	}
	if path := cfg.StatusSocketPath(); path != "" && !*allowRunning && agentAnswers(ctx, path) {
		return &exitError{code: 1, err: fmt.Errorf("%w (its status socket %s answers): stop it first with `launchctl bootout gui/%d/%s` (start it again with `line-agent install`), or pass --allow-running",
			ErrAgentRunning, path, os.Getuid(), installer.Label)}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r := &selftestRun{cfg: cfg, to: handle, open: open, log: log, now: time.Now, helperWait: *helperWait, allowRunning: *allowRunning}
	r.run(ctx)
	failed := 0
	for _, s := range r.steps {
		if s.Result == resultFail {
			failed++
		}
	}
	if *asJSON {
		b, err := json.MarshalIndent(selftestReport{OK: failed == 0, Driver: cfg.Driver, To: handle, Steps: r.steps}, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		printSteps(stdout, cfg.Driver, handle, failed, r.steps)
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("%d of %d steps failed", failed, len(r.steps))}
	}
	return nil
}

// levelGiven reports whether the operator chose a log level, in the
// environment or with --log-level.
func levelGiven(fs *flag.FlagSet, cfg *agent.Config) bool {
	if _, ok := os.LookupEnv(configFlag{cfg: cfg}.env(&cfg.LogLevel)); ok {
		return true
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "log-level" })
	return given
}

// agentAnswers reports whether an agent serves the status socket at path
// (grpc.health.v1 answers, whatever the status).
func agentAnswers(ctx context.Context, path string) bool {
	if _, err := os.Stat(path); err != nil {
		return false
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil
}

// selftestRun is one self-test: its steps run one after another, each
// bounded by the run's context.
type selftestRun struct {
	cfg          agent.Config
	to           string
	open         backendOpener
	log          *slog.Logger
	now          func() time.Time
	helperWait   time.Duration
	allowRunning bool

	steps []stepResult
	// seq numbers the self-test's commands.
	seq int
}

// step runs f and records its result; f returns the result and detail.
func (r *selftestRun) step(name string, f func() (string, string)) string {
	start := r.now()
	result, detail := f()
	r.steps = append(r.steps, stepResult{Step: name, Result: result, Millis: r.now().Sub(start).Milliseconds(), Detail: detail})
	return result
}

// skip records a step that could not run, and why.
func (r *selftestRun) skip(name, why string) {
	r.steps = append(r.steps, stepResult{Step: name, Result: resultSkip, Detail: why})
}

func (r *selftestRun) run(ctx context.Context) {
	var be agent.Backend
	var rows messageRows
	if r.step(stepOpen, func() (string, string) {
		var err error
		if be, err = r.open(ctx, r.cfg, r.log); err != nil {
			detail := err.Error()
			if r.allowRunning {
				detail += " (with --allow-running, a running agent may hold what the self-test needs)"
			}
			return resultFail, detail
		}
		var ok bool
		if rows, ok = be.ChatDB.(messageRows); !ok {
			return resultFail, "the " + be.Name + " backend has no chat.db reader to prove a send with"
		}
		return resultPass, fmt.Sprintf("%s backend open; chat.db readable at %s", be.Name, rows.Path())
	}) != resultPass {
		for _, s := range []string{stepHelper, stepReachable, stepSend, stepDelivered, stepTapback, stepTapbackRow} {
			r.skip(s, "the backend did not open")
		}
		return
	}
	defer func() {
		if be.Close != nil {
			if err := be.Close(); err != nil {
				r.log.Warn("closing the backend", "err", err)
			}
		}
	}()
	line := r.line(be)
	d := be.Driver

	helper := r.step(stepHelper, func() (string, string) { return r.waitHelper(ctx, d) }) == resultPass
	if helper {
		if r.step(stepReachable, func() (string, string) { return r.reachable(ctx, d, line) }) == resultFail {
			for _, s := range []string{stepSend, stepDelivered, stepTapback, stepTapbackRow} {
				r.skip(s, "the reachable step failed: nothing is sent")
			}
			return
		}
	} else {
		r.skip(stepReachable, "the look-up needs the private-API helper")
	}

	var sent *linev1.Snapshot
	if r.step(stepSend, func() (string, string) {
		var res, detail string
		sent, res, detail = r.send(ctx, d, line)
		return res, detail
	}) != resultPass {
		for _, s := range []string{stepDelivered, stepTapback, stepTapbackRow} {
			r.skip(s, "nothing was sent")
		}
		return
	}
	r.step(stepDelivered, func() (string, string) { return r.delivered(ctx, rows, sent) })
	if !helper {
		r.skip(stepTapback, "tapbacks need the private-API helper, which is not connected")
		r.skip(stepTapbackRow, "no tapback was sent")
		return
	}
	if r.step(stepTapback, func() (string, string) { return r.tapback(ctx, d, line, sent) }) != resultPass {
		r.skip(stepTapbackRow, "the tapback failed")
		return
	}
	r.step(stepTapbackRow, func() (string, string) { return r.tapbackRow(ctx, rows, sent) })
}

// line is the line the self-test sends as: the first configured, else
// the backend's account's.
func (r *selftestRun) line(be agent.Backend) string {
	if len(r.cfg.Lines) > 0 {
		return r.cfg.Lines[0]
	}
	if len(be.Lines) > 0 {
		return be.Lines[0]
	}
	return ""
}

// waitHelper waits (bounded) until the driver can tapback: the private-API
// helper is connected.
func (r *selftestRun) waitHelper(ctx context.Context, d messages.Driver) (string, string) {
	wait := r.helperWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, dl.Sub(r.now())/2)
	}
	start := r.now()
	t := time.NewTicker(selftestPoll)
	defer t.Stop()
	for {
		if slices.Contains(d.Capabilities(), linev1.Capability_CAPABILITY_REACT) {
			return resultPass, fmt.Sprintf("the private-API helper is connected (after %s)", r.now().Sub(start).Round(time.Millisecond))
		}
		if r.now().Sub(start) >= wait {
			return resultSkip, fmt.Sprintf("the private-API helper did not connect within %s: the tapback steps are skipped, and the send goes through AppleScript where the driver has it (docs/bridge.md)", wait.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return resultSkip, "the self-test's time ran out waiting for the private-API helper"
		case <-t.C:
		}
	}
}

// command builds one of the self-test's commands, due at the run's end.
func (r *selftestRun) command(ctx context.Context, line string) *linev1.Command {
	r.seq++
	c := &linev1.Command{Id: fmt.Sprintf("selftest-%d-%d", r.now().UnixNano(), r.seq), Line: line}
	if dl, ok := ctx.Deadline(); ok {
		c.Deadline = timestamppb.New(dl)
	}
	return c
}

// execute runs cmd on the driver as the agent's dispatcher would: checked
// by the same rules first, its capabilities offered, its log lines
// carrying its id.
func (r *selftestRun) execute(ctx context.Context, d messages.Driver, cmd *linev1.Command) (*linev1.Snapshot, error) {
	if err := command.Check(cmd, r.now()); err != nil {
		return nil, err
	}
	for _, need := range command.Needs(cmd) {
		if !slices.Contains(d.Capabilities(), need) && !slices.Contains(messages.Offered(d), need) {
			return nil, command.Unsupported(need, "this Mac's Messages driver does not offer it now")
		}
	}
	ctx = logging.WithCommand(ctx, cmd.GetId())
	return d.Execute(ctx, cmd, func(*linev1.CommandUpdate) {})
}

func (r *selftestRun) reachable(ctx context.Context, d messages.Driver, line string) (string, string) {
	cmd := r.command(ctx, line)
	cmd.Kind = &linev1.Command_LookupHandle{LookupHandle: &linev1.LookupHandle{Handle: r.to}}
	snap, err := r.execute(ctx, d, cmd)
	switch {
	case err != nil:
		return resultFail, failure(err)
	case !snap.GetReachable():
		return resultFail, fmt.Sprintf("%s is not reachable on iMessage (not registered with Apple, or a typo): use a handle signed in to iMessage on another device", r.to)
	}
	return resultPass, r.to + " is reachable on iMessage"
}

func (r *selftestRun) send(ctx context.Context, d messages.Driver, line string) (*linev1.Snapshot, string, string) {
	cmd := r.command(ctx, line)
	cmd.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{r.to}}}
	text := "line-agent selftest " + r.now().UTC().Format(time.RFC3339)
	cmd.Kind = &linev1.Command_SendText{SendText: &linev1.SendText{Text: text}}
	snap, err := r.execute(ctx, d, cmd)
	if err != nil {
		return nil, resultFail, failure(err)
	}
	return snap, resultPass, fmt.Sprintf("chat.db shows row %s sent (service %s, chat %s)", snap.GetMessageGuid(), orDash(snap.GetService()), snap.GetChatGuid())
}

// delivered waits until chat.db marks the message delivered: the
// recipient's device acknowledged it.
func (r *selftestRun) delivered(ctx context.Context, rows messageRows, sent *linev1.Snapshot) (string, string) {
	start := r.now()
	t := time.NewTicker(selftestPoll)
	defer t.Stop()
	last := "not read yet"
	for {
		st, err := rows.LookupMessage(ctx, sent.GetMessageGuid())
		switch {
		case err == nil && st.Delivered:
			return resultPass, fmt.Sprintf("chat.db marks %s delivered (%s after the send)", st.GUID, r.now().Sub(start).Round(time.Millisecond))
		case err == nil && st.Error != 0:
			return resultFail, fmt.Sprintf("Messages recorded error %d on %s: not delivered", st.Error, st.GUID)
		case err == nil:
			last = fmt.Sprintf("sent=%t delivered=%t", st.Sent, st.Delivered)
		case ctx.Err() == nil:
			last = "reading chat.db: " + err.Error()
		}
		select {
		case <-ctx.Done():
			return resultFail, fmt.Sprintf("not delivered within the self-test's time (last seen: %s): is the recipient's device online? An SMS may never be marked delivered", last)
		case <-t.C:
		}
	}
}

func (r *selftestRun) tapback(ctx context.Context, d messages.Driver, line string, sent *linev1.Snapshot) (string, string) {
	cmd := r.command(ctx, line)
	cmd.Target = &linev1.Command_ChatGuid{ChatGuid: sent.GetChatGuid()}
	cmd.Kind = &linev1.Command_React{React: &linev1.React{MessageGuid: sent.GetMessageGuid(), Reaction: &linev1.React_Tapback{Tapback: selftestTapback}}}
	snap, err := r.execute(ctx, d, cmd)
	if err != nil {
		return resultFail, failure(err)
	}
	return resultPass, fmt.Sprintf("%s tapback on %s confirmed by chat.db (%s)", selftestTapback, sent.GetMessageGuid(), orDash(snap.GetMessageGuid()))
}

// tapbackRow looks the tapback up again, directly: this account's row on
// the message with the tapback's code.
func (r *selftestRun) tapbackRow(ctx context.Context, rows messageRows, sent *linev1.Snapshot) (string, string) {
	code, err := effects.ReactionCode(selftestTapback, false, false)
	if err != nil {
		return resultFail, err.Error()
	}
	st, err := rows.FindTapback(ctx, sent.GetMessageGuid(), 0, code)
	if err != nil {
		return resultFail, "chat.db has no tapback row: " + err.Error()
	}
	return resultPass, fmt.Sprintf("chat.db row %s: associated_message_type %d on %s", st.GUID, st.Tapback, sent.GetMessageGuid())
}

// failure is a step's detail for a command's error: its code, why, and the
// last state seen.
func failure(err error) string {
	ce := command.AsError(err)
	s := ce.Error()
	if ce.LastState != "" {
		s += " (last state: " + ce.LastState + ")"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printSteps is the table for people: the verdict, then a row per step.
func printSteps(w io.Writer, driver, to string, failed int, steps []stepResult) {
	verdict := "PASS"
	if failed > 0 {
		verdict = fmt.Sprintf("FAIL (%d of %d steps failed)", failed, len(steps))
	}
	fmt.Fprintf(w, "line-agent selftest to %s, driver %s: %s\n", to, driver, verdict)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tRESULT\tTIME\tDETAIL")
	for _, s := range steps {
		took := "-"
		if s.Result != resultSkip || s.Millis > 0 {
			took = (time.Duration(s.Millis) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Step, s.Result, took, strings.ReplaceAll(s.Detail, "\n", " "))
	}
	tw.Flush()
}
