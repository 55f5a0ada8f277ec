package messagesrestart_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/messages/applescript"
	"github.com/line-agent/line-agent/messagesrestart"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// fakeMac writes ps, osascript, killall and open scripts that share one
// state file (present while "Messages" runs) and log their argv, each
// argument in brackets, one run a line. quit is the osascript's body.
func fakeMac(t *testing.T, quit string) (messagesrestart.Mac, string, string) {
	t.Helper()
	dir := t.TempDir()
	state, log := filepath.Join(dir, "running"), filepath.Join(dir, "argv")
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		head := `{ printf '%s' ` + name + `; for a in "$@"; do printf ' [%s]' "$a"; done; echo; } >> ` + log + "\n"
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+head+body+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m := messagesrestart.Mac{
		PS:        script("ps", `echo "    1 /sbin/launchd"; [ -f `+state+` ] && echo "  412 `+macprobe.MessagesExecutable+`"; exit 0`),
		Osascript: script("osascript", strings.ReplaceAll(quit, "STATE", state)),
		Killall:   script("killall", `rm -f `+state),
		OpenPath:  script("open", `touch `+state),
		Timeout:   5 * time.Second,
	}
	return m, state, log
}

// runs is the log without ps's looks, which come as often as Step.
func runs(t *testing.T, log string) (acts []string, ps string) {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, "ps ") {
			ps = l
			continue
		}
		acts = append(acts, l)
	}
	return acts, ps
}

// The macOS actions against fake programs run as real subprocesses: a
// Messages that hangs on quit (osascript never returns) is killed once
// QuitWait passes, then opened, each program with its fixed argv; one
// that quits is only reopened.
func TestMacRestart(t *testing.T) {
	const (
		quit    = `osascript [-e] [tell application "Messages" to quit]`
		killall = `killall [-9] [Messages]`
		open    = `open [-g] [-a] [Messages]`
	)
	for _, tc := range []struct {
		name, quit string
		want       []string
		says       string
	}{
		{"hangs on quit", `sleep 30`, []string{quit, killall, open}, "killed (it did not quit within 500ms) and reopened"},
		{"quits", `rm -f STATE`, []string{quit, open}, "quit and reopened"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, state, log := fakeMac(t, tc.quit)
			r := messagesrestart.New(messagesrestart.Options{Actions: m, PerHour: 3,
				QuitWait: 500 * time.Millisecond, StartWait: 5 * time.Second, Step: 50 * time.Millisecond})
			for range 3 {
				r.OsascriptStarted()
				r.OsascriptEnded(applescript.RunTimedOut)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { r.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			base := &linev1.HealthComponent{Name: "messages", Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: "Messages is running"}
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(r.Component(base).GetDetail(), "running again") {
				if time.Now().After(deadline) {
					t.Fatalf("no restart: %s", r.Component(base).GetDetail())
				}
				time.Sleep(20 * time.Millisecond)
			}
			acts, ps := runs(t, log)
			if !slices.Equal(acts, tc.want) || ps != "ps [-axo] [pid=,comm=]" {
				t.Fatalf("ran %q (ps %q), want %q", acts, ps, tc.want)
			}
			if _, err := os.Stat(state); err != nil {
				t.Fatal("Messages is not running after the restart")
			}
			if d := r.Component(base).GetDetail(); !strings.Contains(d, tc.says) {
				t.Fatalf("detail %q lacks %q", d, tc.says)
			}
		})
	}
}
