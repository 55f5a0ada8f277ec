package applescript

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/pkg/procid"
	"github.com/line-agent/line-agent/pkg/toolrun"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// AppleScript error numbers the sender acts on. They come from osascript's
// standard error ("execution error: ... (-1728)").
const (
	// errNoSuchObject: the chat id or participant does not exist.
	errNoSuchObject = -1728
	// errCoercion: a value could not be made into the type Messages wanted;
	// on macOS 26 an `any;` chat GUID fails with it ("bad service type").
	errCoercion = -1700
	// errNotAuthorized: the Automation permission for Messages is missing.
	errNotAuthorized = -1743
	// errNotRunning: Messages is not running (procNotFound).
	errNotRunning = -600
	// errGroupCreation: Messages refuses to create a group (since macOS 11).
	errGroupCreation = -10000
)

// scriptError is an osascript run that ended in an AppleScript error.
type scriptError struct {
	// Number is the AppleScript error number, 0 when none could be parsed.
	Number int
	// Detail is AppleScript's message, cleaned and cut short.
	Detail string
	// ExitCode is osascript's exit status.
	ExitCode int
}

func (e *scriptError) Error() string {
	if e.Number != 0 {
		return fmt.Sprintf("osascript: AppleScript error %d: %s", e.Number, e.Detail)
	}
	return fmt.Sprintf("osascript exited %d: %s", e.ExitCode, e.Detail)
}

// timeoutError is an osascript run killed for running past Options.Timeout.
type timeoutError struct {
	after time.Duration
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("osascript did not finish within %s and was killed with its process group", e.after)
}

// errNumberRE finds the trailing "(-1728)" of an AppleScript execution error.
var errNumberRE = regexp.MustCompile(`\((-?\d{1,6})\)\s*$`)

// maxDetail bounds how much of AppleScript's message ends up in an error: it
// may quote the values it choked on, and those can be 100 KB of text.
const maxDetail = 200

// parseScriptError reads osascript's standard error. Only the last non-empty
// line counts: that is where osascript prints the execution error.
func parseScriptError(stderr []byte, exitCode int) *scriptError {
	lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
	last := ""
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			last = l
			break
		}
	}
	se := &scriptError{ExitCode: exitCode}
	if m := errNumberRE.FindStringSubmatch(last); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			se.Number = n
		}
		last = strings.TrimSpace(last[:len(last)-len(m[0])])
	}
	if i := strings.Index(last, "execution error:"); i >= 0 {
		last = strings.TrimSpace(last[i+len("execution error:"):])
	}
	se.Detail = cleanDetail(last)
	return se
}

// cleanDetail makes AppleScript's message safe to log and return: control
// characters go, and it is cut at maxDetail runes.
func cleanDetail(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		if unicode.IsControl(r) {
			r = ' '
		}
		if n == maxDetail {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// runner runs one program with arguments and an optional standard input,
// within a time limit, killing its whole process group when the limit passes.
type runner struct {
	timeout time.Duration
	env     []string
	// obs, when set, hears each run (Options.Runs).
	obs RunObserver
}

// quiet is r without its observer, for runs that are not osascript's
// (open launching Messages).
func (r runner) quiet() runner {
	r.obs = nil
	return r
}

// RunEnd is how one osascript run of a send ended, as a RunObserver
// hears it.
type RunEnd int

const (
	// RunAnswered: osascript exited by itself, with or without an
	// AppleScript error: Messages answered.
	RunAnswered RunEnd = iota
	// RunTimedOut: killed at Options.Timeout or at the command's deadline:
	// Messages did not answer in time, the sign that it hangs.
	RunTimedOut
	// RunAbandoned: cancelled (the agent stopping) or never started: it
	// says nothing about Messages.
	RunAbandoned
)

// RunObserver hears the Sender's osascript runs, so that something
// outside the driver (the agent's Messages restarter) can tell Messages
// hanging (runs timing out in a row) and wait for the runs in flight to
// end before it restarts Messages. Each OsascriptStarted is followed by
// one OsascriptEnded. Both are called on the sending goroutine and must
// not block.
type RunObserver interface {
	OsascriptStarted()
	OsascriptEnded(RunEnd)
}

// result is what a finished run left behind.
type result struct {
	stdout, stderr []byte
	exitCode       int
}

// run executes path with args, stdin fed from input. It returns a
// *timeoutError when the run passed r.timeout, ctx.Err() when ctx ended first
// (the process group is killed either way), a *scriptError for a non-zero
// exit, and the output otherwise.
func (r runner) run(ctx context.Context, path string, args []string, input string) (*result, error) {
	runCtx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	end := RunAbandoned // until the run is seen to end otherwise
	if r.obs != nil {
		r.obs.OsascriptStarted()
		defer func() { r.obs.OsascriptEnded(end) }()
	}
	cmd := exec.CommandContext(runCtx, path, args...)
	// A sane, minimal environment: nothing of the agent's (tokens live in
	// files, but belt and braces) reaches osascript or its children.
	cmd.Env = toolrun.Env(r.env...)
	var script *gatedReader
	if input != "" {
		// osascript runs nothing before its script ends: the script waits
		// until the child is noted (noteChild), so a crash never leaves a
		// run the next start cannot account for.
		script = &gatedReader{open: make(chan struct{}), r: strings.NewReader(input)}
		cmd.Stdin = script
	}
	stdout, stderr := &toolrun.Capped{Max: 64 << 10}, &toolrun.Capped{Max: 64 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// osascript can spawn helpers: a hung script must not leave them behind.
	toolrun.KillGroupOnCancel(cmd)
	// A grandchild that keeps our pipes open must not hold Wait forever.
	cmd.WaitDelay = 2 * time.Second

	err := cmd.Start()
	if err == nil && script != nil {
		if nerr := noteChild(ctx, cmd.Process.Pid); nerr != nil {
			script.release(false)
			_ = toolrun.KillGroup(cmd)
			_ = cmd.Wait()
			return &result{}, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
				Msg: "the agent could not record the osascript run, so it was stopped before Messages got anything", Err: nerr}
		}
		script.release(true)
	}
	if err == nil {
		err = cmd.Wait()
	}
	// Whatever happened, nothing from this run may outlive it once its time
	// is up; on a normal exit the group is left alone (Messages is not in it).
	res := &result{stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	if cmd.ProcessState != nil {
		res.exitCode = cmd.ProcessState.ExitCode()
	}
	if runCtx.Err() != nil {
		_ = toolrun.KillGroup(cmd)
		if !errors.Is(ctx.Err(), context.Canceled) {
			end = RunTimedOut
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, &timeoutError{after: r.timeout}
	}
	if cmd.ProcessState != nil {
		end = RunAnswered
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return res, parseScriptError(res.stderr, res.exitCode)
		}
		if errors.Is(err, exec.ErrWaitDelay) {
			// The program exited 0 but left a child holding our pipes.
			return res, nil
		}
		return res, err
	}
	return res, nil
}

// noteChild notes the osascript child (messages.NoteAttempt) with its
// start time, so that after a crash the agent can tell whether this very
// process still runs. When its start cannot be read the note has none: a
// later process on that pid never matches it, and where no process table
// can be read at all (procid.ErrUnsupported) its fate stays unknown.
func noteChild(ctx context.Context, pid int) error {
	id, err := procid.Of(pid)
	if err != nil {
		id = procid.ID{Pid: pid}
	}
	return messages.NoteAttempt(ctx, messages.Attempt{Process: &id})
}

// gatedReader is a child's standard input that yields nothing until
// released: released true, it reads r; false, it ends at once (the child
// is being killed and must get no script).
type gatedReader struct {
	open chan struct{}
	ok   bool // written before open is closed
	r    io.Reader
}

func (g *gatedReader) release(ok bool) {
	g.ok = ok
	close(g.open)
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.open
	if !g.ok {
		return 0, io.EOF
	}
	return g.r.Read(p)
}
