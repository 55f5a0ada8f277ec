// Package macprobe asks macOS's own programs what health and `line-agent
// doctor` need to know and the agent cannot see itself: whether Messages
// (or BlueBubbles Server) runs (ps), the state of System Integrity
// Protection (csrutil) and of the agent's LaunchAgent (launchctl). Every
// program's path is configured, so that off a Mac the probes run against
// fake programs; every run has fixed arguments (no value of anyone's),
// a minimal environment and a time limit past which its process group is
// killed.
package macprobe

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

// DefaultTimeout bounds a run when the caller's context has no sooner
// deadline.
const DefaultTimeout = 10 * time.Second

// maxOutput bounds what a run's output may cost in memory: ps on a busy
// Mac prints a few hundred kilobytes at most.
const maxOutput = 4 << 20

// TimeoutError is a run killed for taking too long.
type TimeoutError struct {
	Program string
	After   time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("%s did not finish within %s and was killed", e.Program, e.After)
}

// ExitError is a run that exited non-zero; Stderr is its standard error,
// cut short.
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

// run runs path with args within timeout (or ctx's deadline, if sooner)
// and returns its standard output.
func run(ctx context.Context, timeout time.Duration, path string, args ...string) ([]byte, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, path, args...)
	cmd.Env = minimalEnv()
	var stdout, stderr capped
	stdout.max, stderr.max = maxOutput, 4<<10
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	setProcessGroup(cmd)
	cmd.Cancel = func() error { return killProcessGroup(cmd) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	if rctx.Err() != nil {
		_ = killProcessGroup(cmd)
		if errors.Is(ctx.Err(), context.Canceled) {
			return nil, ctx.Err()
		}
		// This run's limit or the caller's deadline: either way too long.
		return nil, &TimeoutError{Program: path, After: time.Since(start).Round(time.Millisecond)}
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.Bytes(), &ExitError{Program: path, Code: ee.ExitCode(), Stderr: strings.TrimSpace(stderr.String())}
	}
	if err != nil && !errors.Is(err, exec.ErrWaitDelay) {
		return nil, fmt.Errorf("run %s: %w", path, err)
	}
	return stdout.Bytes(), nil
}

// minimalEnv is what a macOS program needs to find the user's session,
// nothing of the agent's.
func minimalEnv() []string {
	var env []string
	for _, k := range []string{"HOME", "USER", "LOGNAME", "PATH", "TMPDIR", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// capped keeps the first max bytes written.
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
