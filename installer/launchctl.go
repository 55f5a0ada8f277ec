package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// maxStderr bounds what is kept of launchctl's error output for a message.
const maxStderr = 4 << 10

// Launchctl runs launchctl as a subprocess. Arguments are argv, never a
// shell line, so a path with spaces or quotes is one argument whatever it
// holds. None of them is a secret.
type Launchctl struct {
	// Path is launchctl's absolute path: /bin/launchctl on a Mac, a fake
	// script in tests.
	Path string
}

// LaunchctlError is a launchctl run that failed. Callers look at it to
// tell "not loaded" (nothing to boot out) from a real failure.
type LaunchctlError struct {
	// Args are launchctl's arguments, without the binary.
	Args []string
	// ExitCode is launchctl's exit status, -1 when it did not run to an
	// exit (not startable, killed, cancelled).
	ExitCode int
	// Stderr is the start of what launchctl wrote to standard error.
	Stderr string
	// Err is the exec error.
	Err error
}

func (e *LaunchctlError) Error() string {
	msg := fmt.Sprintf("launchctl %s: %v", strings.Join(e.Args, " "), e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *LaunchctlError) Unwrap() error { return e.Err }

// NotLoaded reports launchctl saying there is no such job in the domain:
// bootout answers "Boot-out failed: 3: No such process" (exit 3) for a
// label that was never loaded, print and older versions "Could not find
// specified service" (exit 113).
func (e *LaunchctlError) NotLoaded() bool {
	if e.ExitCode == 3 || e.ExitCode == 113 {
		return true
	}
	return strings.Contains(e.Stderr, "No such process") || strings.Contains(e.Stderr, "Could not find")
}

// Run runs launchctl with args and returns a *LaunchctlError when it fails.
// Its standard output is discarded (install and uninstall print their own
// account of what happened).
func (l Launchctl) Run(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, l.Path, args...)
	var stderr bytes.Buffer
	cmd.Stdout = io.Discard
	cmd.Stderr = &limitedWriter{w: &stderr, left: maxStderr}
	err := cmd.Run()
	if err == nil {
		return nil
	}
	le := &LaunchctlError{Args: args, ExitCode: -1, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		le.ExitCode = ee.ExitCode()
	}
	return le
}

// limitedWriter keeps the first left bytes and drops the rest, so a
// runaway launchctl cannot fill memory; it never fails the write.
type limitedWriter struct {
	w    io.Writer
	left int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	n := len(p)
	if l.left > 0 {
		q := p
		if len(q) > l.left {
			q = q[:l.left]
		}
		l.left -= len(q)
		_, _ = l.w.Write(q)
	}
	return n, nil
}
