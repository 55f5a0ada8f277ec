package messagesrestart

import (
	"context"
	"errors"
	"time"

	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/pkg/toolrun"
)

// QuitScript is the one script a restart runs, as osascript's -e
// argument: a constant, with nothing of anyone's in it.
const QuitScript = `tell application "Messages" to quit`

// Default program paths on macOS.
const (
	DefaultOsascript = "/usr/bin/osascript"
	DefaultKillall   = "/usr/bin/killall"
	DefaultOpen      = "/usr/bin/open"
	DefaultPS        = "/bin/ps"
)

// Mac is the macOS Actions: each a program run by argv with a time
// limit, so off a Mac they run against fake programs.
//
//	running: ps -axo pid=,comm=   (Messages' executable among them)
//	quit:    osascript -e 'tell application "Messages" to quit'
//	kill:    killall -9 Messages
//	open:    open -g -a Messages  (-g: in the background, as the sender launches it)
type Mac struct {
	// Osascript, Killall, OpenPath and PS are the programs; empty takes
	// the Default paths.
	Osascript, Killall, OpenPath, PS string
	// Timeout bounds each run (the caller's deadline may be sooner);
	// default 10 s.
	Timeout time.Duration
}

var _ Actions = Mac{}

func (m Mac) path(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

func (m Mac) timeout() time.Duration {
	if m.Timeout <= 0 {
		return 10 * time.Second
	}
	return m.Timeout
}

// Running looks for Messages' executable among the processes.
func (m Mac) Running(ctx context.Context) (bool, error) {
	procs, err := macprobe.PS{Path: m.path(m.PS, DefaultPS), Timeout: m.timeout()}.Processes(ctx)
	if err != nil {
		return false, err
	}
	_, ok := macprobe.FindMessages(procs)
	return ok, nil
}

// Quit asks Messages to quit through AppleScript; a hung Messages never
// answers, and the run is killed at the caller's deadline.
func (m Mac) Quit(ctx context.Context) error {
	_, err := toolrun.Run(ctx, m.timeout(), m.path(m.Osascript, DefaultOsascript), "-e", QuitScript)
	return err
}

// Kill sends SIGKILL to every process of this user named Messages;
// killall's "no matching processes" (exit 1) means it is already gone.
func (m Mac) Kill(ctx context.Context) error {
	_, err := toolrun.Run(ctx, m.timeout(), m.path(m.Killall, DefaultKillall), "-9", "Messages")
	var ee *toolrun.ExitError
	if errors.As(err, &ee) && ee.Code == 1 {
		return nil
	}
	return err
}

// Open starts Messages in the background.
func (m Mac) Open(ctx context.Context) error {
	_, err := toolrun.Run(ctx, m.timeout(), m.path(m.OpenPath, DefaultOpen), "-g", "-a", "Messages")
	return err
}
