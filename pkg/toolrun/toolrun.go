// Package toolrun runs one of the system's own programs (lsof, ps,
// codesign, osascript, killall, open) the way the agent must on a Mac: a
// configured path, arguments as argv and never a shell line, a minimal
// environment (nothing of the agent's, so no token can reach a child),
// output capped, and a time limit past which the program's whole process
// group is killed. A program that hangs therefore costs its caller at most
// the limit, and a caller that must fail closed (the helper's peer check)
// can.
package toolrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// DefaultTimeout bounds a run when the caller gives no limit.
const DefaultTimeout = 10 * time.Second

// Output caps: a program's standard output may be a process or socket
// listing (lsof on a busy Mac prints a few hundred kilobytes); standard
// error is for messages and codesign's report.
const (
	maxStdout = 4 << 20
	maxStderr = 64 << 10
	// maxStderrInError bounds how much standard error an ExitError carries.
	maxStderrInError = 300
)

// Result is what a finished run printed.
type Result struct {
	Stdout, Stderr []byte
}

// TimeoutError is a run killed for passing its time limit (or the
// caller's deadline): the program did not answer.
type TimeoutError struct {
	Program string
	After   time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s did not finish within %s and was killed", e.Program, e.After)
}

// ExitError is a run that exited non-zero. Callers act on Code (lsof's 1
// is "nothing found", killall's 1 "no such process"); Stderr is the
// program's message, cut short. Result still holds what it printed.
type ExitError struct {
	Program string
	Code    int
	Stderr  string
}

func (e *ExitError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("%s exited %d", e.Program, e.Code)
	}
	return fmt.Sprintf("%s exited %d: %s", e.Program, e.Code, e.Stderr)
}

// Run runs path with args within timeout (DefaultTimeout when not
// positive, the caller's deadline when sooner). It returns a
// *TimeoutError when the limit passed, ctx's error when ctx was cancelled,
// an *ExitError (with the output) for a non-zero exit, and the output
// otherwise.
func Run(ctx context.Context, timeout time.Duration, path string, args ...string) (Result, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, path, args...)
	cmd.Env = Env()
	stdout, stderr := &Capped{Max: maxStdout}, &Capped{Max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	KillGroupOnCancel(cmd)
	// A grandchild holding the pipes must not hold the run past its limit.
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if rctx.Err() != nil {
		_ = KillGroup(cmd)
		if errors.Is(ctx.Err(), context.Canceled) {
			return res, ctx.Err()
		}
		return res, &TimeoutError{Program: path, After: time.Since(start).Round(time.Millisecond)}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		msg := strings.TrimSpace(string(res.Stderr))
		if len(msg) > maxStderrInError {
			msg = strings.ToValidUTF8(msg[:maxStderrInError], "") + "…"
		}
		return res, &ExitError{Program: path, Code: ee.ExitCode(), Stderr: msg}
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return res, fmt.Errorf("run %s: %w", path, err)
	}
	return res, nil
}

// Env is what a macOS program needs to find the user's session, nothing
// of the agent's, followed by extra (a test steering a fake program).
// Run uses it; so does a caller that drives its child itself (osascript's
// runner in messages/applescript, which gates its standard input).
func Env(extra ...string) []string {
	var env []string
	for _, k := range []string{"HOME", "USER", "LOGNAME", "PATH", "TMPDIR", "LANG", "__CF_USER_TEXT_ENCODING"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}

// KillGroupOnCancel gives cmd (made with exec.CommandContext) a process
// group of its own and has the end of its context kill that whole group,
// so a program that hangs leaves nothing it started behind.
func KillGroupOnCancel(cmd *exec.Cmd) {
	setProcessGroup(cmd)
	cmd.Cancel = func() error { return killProcessGroup(cmd) }
}

// KillGroup sends SIGKILL to the process group KillGroupOnCancel gave
// cmd (the child alone where there are no process groups). A group
// already gone is no error.
func KillGroup(cmd *exec.Cmd) error { return killProcessGroup(cmd) }

// Capped keeps the first Max bytes written and drops the rest, so a
// chatty child cannot grow its caller's memory; it never fails a write.
type Capped struct {
	bytes.Buffer
	Max int
}

func (c *Capped) Write(p []byte) (int, error) {
	if room := c.Max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
