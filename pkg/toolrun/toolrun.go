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
	cmd.Env = minimalEnv()
	stdout, stderr := &capped{max: maxStdout}, &capped{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	setProcessGroup(cmd)
	cmd.Cancel = func() error { return killProcessGroup(cmd) }
	// A grandchild holding the pipes must not hold the run past its limit.
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if rctx.Err() != nil {
		_ = killProcessGroup(cmd)
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

// minimalEnv is what a macOS program needs to find the user's session,
// nothing of the agent's.
func minimalEnv() []string {
	var env []string
	for _, k := range []string{"HOME", "USER", "LOGNAME", "PATH", "TMPDIR", "LANG", "__CF_USER_TEXT_ENCODING"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// capped keeps the first max bytes written and drops the rest.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
