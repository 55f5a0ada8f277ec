package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/logging"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// lockedLog is a log buffer written by the dispatcher's goroutines and read
// by the test.
type lockedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// loggingDriver logs a line the way the drivers do, through its own
// component logger with the command's context, and succeeds.
type loggingDriver struct{ log *slog.Logger }

func (loggingDriver) Capabilities() []linev1.Capability {
	return []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}
}

func (d loggingDriver) Execute(ctx context.Context, cmd *linev1.Command, _ func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	d.log.WarnContext(ctx, "driver line", "err", "osascript was slow")
	return &linev1.Snapshot{MessageGuid: "guid-" + cmd.GetId(), Sent: true}, nil
}

// The dispatcher hands the driver a context naming the command, so a
// driver's or confirmer's line about it carries "command" without the
// driver adding it, and the dispatcher's own lines carry it once.
func TestDriverLogLinesNameTheCommand(t *testing.T) {
	ctx := context.Background()
	var out lockedLog
	log := logging.New(&out, logging.Options{Format: logging.JSON, Level: slog.LevelDebug})
	frames := newFrames()
	d := NewDispatcher(ctx, DispatcherOptions{Driver: loggingDriver{log: log.With("component", "applescript")}, Journal: openTestJournal(t, t.TempDir()),
		Emit: frames.emit, Lines: []string{testLine}, Logger: log})
	d.Submit(ctx, testCommand("logged-1"))
	if frames.result(t, "logged-1", 5*time.Second).GetSnapshot() == nil {
		t.Fatal("the command did not succeed")
	}
	d.Drain()
	d.Wait()
	var driverLine, doneLine map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		switch m["msg"] {
		case "driver line":
			driverLine = m
		case "command succeeded":
			doneLine = m
		}
		if strings.Contains(l, "logged-1") && m[logging.CommandKey] != "logged-1" {
			t.Errorf("a line about the command without it as %q: %s", logging.CommandKey, l)
		}
		if strings.Count(l, `"command":`) > 1 {
			t.Errorf("the command named twice: %s", l)
		}
	}
	if driverLine == nil || driverLine[logging.CommandKey] != "logged-1" || driverLine["component"] != "applescript" {
		t.Errorf("the driver's line: %v, want command logged-1 and its component\n%s", driverLine, out.String())
	}
	if doneLine == nil || doneLine[logging.CommandKey] != "logged-1" {
		t.Errorf("the dispatcher's line: %v\n%s", doneLine, out.String())
	}
}
