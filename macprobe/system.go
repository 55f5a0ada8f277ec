package macprobe

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/line-agent/line-agent/pkg/toolrun"
)

// SIP is the state System Integrity Protection reports.
type SIP int

const (
	// SIPUnknown: csrutil's answer was neither enabled nor disabled (a
	// custom configuration, where some protections are off).
	SIPUnknown SIP = iota
	// SIPEnabled: the private-API helper cannot be loaded into Messages.
	SIPEnabled
	// SIPDisabled: it can.
	SIPDisabled
)

// Csrutil runs `csrutil status`.
type Csrutil struct {
	// Path is csrutil; default /usr/bin/csrutil.
	Path    string
	Timeout time.Duration
}

// Status returns SIP's state and csrutil's first line, as it said it.
func (c Csrutil) Status(ctx context.Context) (SIP, string, error) {
	path := c.Path
	if path == "" {
		path = "/usr/bin/csrutil"
	}
	res, err := toolrun.Run(ctx, c.Timeout, path, "status")
	if err != nil {
		return SIPUnknown, "", err
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(res.Stdout)), "\n")
	first = strings.TrimSpace(first)
	low := strings.ToLower(first)
	switch {
	case strings.Contains(low, "status: enabled"):
		return SIPEnabled, first, nil
	case strings.Contains(low, "status: disabled"):
		return SIPDisabled, first, nil
	}
	return SIPUnknown, first, nil
}

// Job is a LaunchAgent as launchd reports it.
type Job struct {
	// Loaded: launchd knows the job (its plist is bootstrapped).
	Loaded bool
	// State is launchd's word for it ("running", "not running", ...).
	State string
	// PID is the running process, 0 when none.
	PID int
	// LastExit is launchd's "last exit code" line, "" when it has none.
	LastExit string
}

// notFound is launchctl print's exit status for a service it does not know.
const notFound = 113

// Launchctl runs `launchctl print gui/<uid>/<label>`.
type Launchctl struct {
	// Path is launchctl; default /bin/launchctl.
	Path    string
	Timeout time.Duration
}

// Print reports the job label in the user's GUI domain.
func (l Launchctl) Print(ctx context.Context, uid int, label string) (Job, error) {
	path := l.Path
	if path == "" {
		path = "/bin/launchctl"
	}
	res, err := toolrun.Run(ctx, l.Timeout, path, "print", fmt.Sprintf("gui/%d/%s", uid, label))
	var ee *toolrun.ExitError
	if errors.As(err, &ee) && (ee.Code == notFound || strings.Contains(strings.ToLower(ee.Stderr), "could not find service")) {
		return Job{}, nil
	}
	if err != nil {
		return Job{}, err
	}
	return parseJob(string(res.Stdout)), nil
}

// parseJob reads the job's own "key = value" lines, the ones one level
// inside its braces (nested blocks have keys of the same names).
func parseJob(out string) Job {
	j := Job{Loaded: true}
	depth := 0
	for _, line := range strings.Split(out, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasSuffix(t, "{") {
			depth++
			continue
		}
		if t == "}" {
			depth--
			continue
		}
		if depth != 1 {
			continue
		}
		k, v, ok := strings.Cut(t, " = ")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "state":
			j.State = strings.TrimSpace(v)
		case "pid":
			j.PID, _ = strconv.Atoi(strings.TrimSpace(v))
		case "last exit code":
			j.LastExit = strings.TrimSpace(v)
		}
	}
	return j
}
