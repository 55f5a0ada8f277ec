package macprobe_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/pkg/toolrun"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// fake writes an executable shell script standing in for a macOS program.
func fake(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// Messages is found by its executable's path in ps's listing (also from an
// older system's /Applications), not by a process that merely mentions it;
// its absence is DOWN with the fix; the argv is the fixed one.
func TestMessagesRunning(t *testing.T) {
	ctx := context.Background()
	argv := filepath.Join(t.TempDir(), "argv")
	running := fake(t, "ps", `echo "$@" > `+argv+`
cat <<'OUT'
    1 /sbin/launchd
  412 /System/Applications/Messages.app/Contents/MacOS/Messages
  999 /usr/bin/grep Messages
OUT`)
	c := macprobe.PS{Path: running}.Messages(ctx)
	if c.Status != linev1.HealthStatus_HEALTH_STATUS_OK || !strings.Contains(c.Detail, "pid 412") {
		t.Fatalf("running: %+v", c)
	}
	if b, _ := os.ReadFile(argv); strings.TrimSpace(string(b)) != "-axo pid=,comm=" {
		t.Fatalf("ps argv %q", b)
	}
	old := fake(t, "ps", `echo "  77 /Applications/Messages.app/Contents/MacOS/Messages"`)
	if c := (macprobe.PS{Path: old}).Messages(ctx); c.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("older path: %+v", c)
	}
	absent := fake(t, "ps", `echo "    1 /sbin/launchd"; echo "  999 /usr/bin/grep /System/Applications/Messages.app/Contents/MacOS/MessagesX"`)
	c = macprobe.PS{Path: absent}.Messages(ctx)
	if c.Status != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(c.Fix, "open -a Messages") {
		t.Fatalf("not running: %+v", c)
	}
	broken := fake(t, "ps", `echo "ps: no" >&2; exit 1`)
	c = macprobe.PS{Path: broken}.Messages(ctx)
	if c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(c.Detail, "ps: no") {
		t.Fatalf("ps failing: %+v", c)
	}
	c = macprobe.PS{Path: filepath.Join(t.TempDir(), "missing")}.Messages(ctx)
	if c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(c.Fix, "LINE_AGENT_PS") {
		t.Fatalf("no ps: %+v", c)
	}
}

// A program that hangs is killed at the time limit, with whatever it
// started, and the caller hears a TimeoutError.
func TestHangIsBounded(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	hang := fake(t, "ps", `sleep 60 & echo $! > `+pidFile+`; wait`)
	start := time.Now()
	_, err := macprobe.PS{Path: hang, Timeout: 300 * time.Millisecond}.Processes(context.Background())
	var te *toolrun.TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("want a TimeoutError, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	c := macprobe.PS{Path: hang, Timeout: 300 * time.Millisecond}.Messages(context.Background())
	if c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(c.Detail, "did not finish") {
		t.Fatalf("hang: %+v", c)
	}
	// The grandchild went with the process group.
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	proc := "/proc/" + strings.TrimSpace(string(b))
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := os.ReadFile(proc + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			break // gone, or a zombie waiting for init
		}
		if time.Now().After(end) {
			t.Fatalf("the hung program's child %s outlived the time limit", proc)
		}
	}
}

func TestFindBlueBubbles(t *testing.T) {
	procs := []macprobe.Process{{1, "/sbin/launchd"}, {88, "/Applications/BlueBubbles.app/Contents/MacOS/BlueBubbles"}}
	if p, ok := macprobe.FindBlueBubbles(procs); !ok || p.PID != 88 {
		t.Fatalf("%v %v", p, ok)
	}
	if _, ok := macprobe.FindBlueBubbles(procs[:1]); ok {
		t.Fatal("found BlueBubbles where it is not")
	}
}

func TestCsrutil(t *testing.T) {
	ctx := context.Background()
	for out, want := range map[string]macprobe.SIP{
		"System Integrity Protection status: enabled.":  macprobe.SIPEnabled,
		"System Integrity Protection status: disabled.": macprobe.SIPDisabled,
		"System Integrity Protection status: unknown (Custom Configuration).\n\nConfiguration:\n\tDebugging Restrictions: disabled": macprobe.SIPUnknown,
	} {
		c := macprobe.Csrutil{Path: fake(t, "csrutil", `[ "$1" = status ] || exit 9
printf '%s\n' "`+out+`"`)}
		got, line, err := c.Status(ctx)
		if err != nil || got != want || strings.Contains(line, "\n") || !strings.HasPrefix(line, "System Integrity") {
			t.Errorf("%q: %v %q %v, want %v", out, got, line, err, want)
		}
	}
	if _, _, err := (macprobe.Csrutil{Path: fake(t, "csrutil", "exit 1")}).Status(ctx); err == nil {
		t.Error("a failing csrutil answered")
	}
}

func TestLaunchctlPrint(t *testing.T) {
	ctx := context.Background()
	argv := filepath.Join(t.TempDir(), "argv")
	loaded := fake(t, "launchctl", `echo "$@" > `+argv+`
cat <<'OUT'
gui/501/dev.line-agent.agent = {
	active count = 1
	path = /Users/someone/Library/LaunchAgents/dev.line-agent.agent.plist
	state = running
	program = /usr/local/bin/line-agent
	arguments = {
		/usr/local/bin/line-agent
	}
	pid = 4242
	last exit code = (never exited)
	endpoints = {
		"x" = {
			state = inactive
			pid = 1
		}
	}
}
OUT`)
	j, err := macprobe.Launchctl{Path: loaded}.Print(ctx, 501, "dev.line-agent.agent")
	if err != nil || !j.Loaded || j.State != "running" || j.PID != 4242 || j.LastExit != "(never exited)" {
		t.Fatalf("loaded: %+v %v", j, err)
	}
	if b, _ := os.ReadFile(argv); strings.TrimSpace(string(b)) != "print gui/501/dev.line-agent.agent" {
		t.Fatalf("launchctl argv %q", b)
	}
	missing := fake(t, "launchctl", `echo 'Could not find service "dev.line-agent.agent" in domain for port' >&2; exit 113`)
	if j, err := (macprobe.Launchctl{Path: missing}).Print(ctx, 501, "dev.line-agent.agent"); err != nil || j.Loaded {
		t.Fatalf("not loaded: %+v %v", j, err)
	}
	broken := fake(t, "launchctl", `echo boom >&2; exit 5`)
	var ee *toolrun.ExitError
	if _, err := (macprobe.Launchctl{Path: broken}).Print(ctx, 501, "x"); !errors.As(err, &ee) || ee.Code != 5 || ee.Stderr != "boom" {
		t.Fatalf("broken: %v", err)
	}
}
