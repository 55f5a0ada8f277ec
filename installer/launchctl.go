package installer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/line-agent/line-agent/pkg/toolrun"
)

// launchctlTimeout bounds one launchctl run.
const launchctlTimeout = 30 * time.Second

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
	// Err is why it failed: its exit status, or the run's error (not
	// startable, timed out, cancelled).
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
// account of what happened). It runs through pkg/toolrun like every other
// system program the agent starts: a minimal environment, capped output,
// and a time limit past which its process group is killed, so a launchd
// that does not answer cannot hold install or uninstall forever.
func (l Launchctl) Run(ctx context.Context, args ...string) error {
	_, err := toolrun.Run(ctx, launchctlTimeout, l.Path, args...)
	if err == nil {
		return nil
	}
	le := &LaunchctlError{Args: args, ExitCode: -1, Err: err}
	var ee *toolrun.ExitError
	if errors.As(err, &ee) {
		le.ExitCode, le.Stderr = ee.Code, ee.Stderr
		le.Err = fmt.Errorf("exited %d", ee.Code)
	}
	return le
}
