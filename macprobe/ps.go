package macprobe

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/pkg/toolrun"
)

// MessagesExecutable is where macOS 11 and later keep Messages; an older
// system's /Applications/Messages.app is recognised by the same tail.
const MessagesExecutable = "/System/Applications/Messages.app/Contents/MacOS/Messages"

// messagesTail is the part of the executable's path every install shares.
const messagesTail = "/Messages.app/Contents/MacOS/Messages"

// MessagesFix is how Messages is started and kept running.
const MessagesFix = "open Messages (open -a Messages) and leave it open; to start it at login add it in System Settings > General > Login Items"

// Process is one running process as ps lists it.
type Process struct {
	PID int
	// Command is the executable's path (ps's comm column on macOS).
	Command string
}

// PS lists processes with `ps -axo pid=,comm=`.
type PS struct {
	// Path is ps; default /bin/ps.
	Path string
	// Timeout bounds one run; default toolrun.DefaultTimeout.
	Timeout time.Duration
}

// Processes lists every process of every user.
func (p PS) Processes(ctx context.Context) ([]Process, error) {
	path := p.Path
	if path == "" {
		path = "/bin/ps"
	}
	res, err := toolrun.Run(ctx, p.Timeout, path, "-axo", "pid=,comm=")
	if err != nil {
		return nil, err
	}
	var procs []Process
	for _, line := range strings.Split(string(res.Stdout), "\n") {
		pid, comm, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(pid)
		if err != nil {
			continue
		}
		procs = append(procs, Process{PID: n, Command: strings.TrimSpace(comm)})
	}
	return procs, nil
}

// Messages is the "messages" component's probe: is Messages.app running.
func (p PS) Messages(ctx context.Context) component.Check {
	procs, err := p.Processes(ctx)
	if err != nil {
		return component.Degraded("cannot list processes to find Messages: "+err.Error(), "check LINE_AGENT_PS (default /bin/ps)")
	}
	if m, ok := FindMessages(procs); ok {
		return component.OK(fmt.Sprintf("Messages is running (pid %d)", m.PID))
	}
	return component.Down("Messages is not running: nothing is sent or received until it is", MessagesFix)
}

// FindMessages finds Messages.app among procs.
func FindMessages(procs []Process) (Process, bool) {
	for _, pr := range procs {
		if pr.Command == MessagesExecutable || strings.HasSuffix(pr.Command, messagesTail) {
			return pr, true
		}
	}
	return Process{}, false
}

// FindBlueBubbles finds BlueBubbles Server among procs: it listens on the
// port the private-API helper dials, the port line-agent wants.
func FindBlueBubbles(procs []Process) (Process, bool) {
	for _, pr := range procs {
		if strings.Contains(strings.ToLower(pr.Command), "bluebubbles") {
			return pr, true
		}
	}
	return Process{}, false
}
