package applescript

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// fakeOsascript writes a shell script standing in for osascript: it keeps
// its argv and the script it was given, then does body.
func fakeOsascript(t *testing.T, body string) (path, seen string) {
	t.Helper()
	dir := t.TempDir()
	path, seen = filepath.Join(dir, "osascript"), filepath.Join(dir, "seen")
	script := "#!/bin/sh\necho \"$@\" > " + seen + ".argv\ncat > " + seen + "\n" + body + "\n"
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return path, seen
}

// The Automation and account probes run real osascript processes (fakes
// here) with constant scripts on standard input and "-" as the only
// argument, and judge each answer: granted, -1743, Messages not running,
// a hang (bounded), an account signed in, connecting, signed out,
// disabled, absent.
func TestProbes(t *testing.T) {
	ctx := context.Background()
	const denied = `echo "execution error: Not authorized to send Apple events to Messages. (-1743)" >&2; exit 1`
	cases := []struct {
		name, body string
		account    bool
		status     linev1.HealthStatus
		inDetail   string
		inFix      string
	}{
		{"granted", `echo authorized`, false, linev1.HealthStatus_HEALTH_STATUS_OK, "may control", ""},
		{"denied", denied, false, linev1.HealthStatus_HEALTH_STATUS_DOWN, "-1743", "Privacy & Security > Automation"},
		{"not running", `echo "not running"`, false, linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "not running", "open Messages"},
		{"not running -600", `echo "execution error: Messages got an error: Application isn't running. (-600)" >&2; exit 1`, false, linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "not running", "open Messages"},
		{"hang", `sleep 60`, false, linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "in time", "answer the prompt"},
		{"missing", "", false, linev1.HealthStatus_HEALTH_STATUS_DOWN, "cannot run osascript", "LINE_AGENT_OSASCRIPT"},
		{"connected", `printf 'SMS\ttrue\tconnected\niMessage\ttrue\tconnected\n'`, true, linev1.HealthStatus_HEALTH_STATUS_OK, "signed in", ""},
		{"connecting", `printf 'iMessage\ttrue\tconnecting\n'`, true, linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "connecting", "network"},
		{"signed out", `printf 'iMessage\ttrue\tdisconnected\n'`, true, linev1.HealthStatus_HEALTH_STATUS_DOWN, "disconnected", "sign in"},
		{"disabled", `printf 'iMessage\tfalse\tdisconnected\n'`, true, linev1.HealthStatus_HEALTH_STATUS_DOWN, "disabled", "Enable this account"},
		{"one good of two", `printf 'iMessage\tfalse\tdisconnected\niMessage\ttrue\tconnected\n'`, true, linev1.HealthStatus_HEALTH_STATUS_OK, "signed in", ""},
		{"no iMessage", `printf 'SMS\ttrue\tconnected\n'`, true, linev1.HealthStatus_HEALTH_STATUS_DOWN, "no iMessage account", "sign in"},
		{"account denied", denied, true, linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "automation component", "Automation"},
		{"account not running", `echo "not running"`, true, linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "not running", "open Messages"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path, seen := fakeOsascript(t, c.body)
			if c.name == "missing" {
				path += "-absent"
			}
			p := NewProbe(ProbeOptions{OsascriptPath: path, Timeout: 300 * time.Millisecond})
			start := time.Now()
			got, want := p.Automation(ctx), automationScript
			if c.account {
				got, want = p.Account(ctx), accountScript
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v", d)
			}
			if got.Status != c.status || !strings.Contains(got.Detail, c.inDetail) || !strings.Contains(got.Fix, c.inFix) {
				t.Fatalf("got %+v, want %v with %q and fix %q", got, c.status, c.inDetail, c.inFix)
			}
			if got.Status != linev1.HealthStatus_HEALTH_STATUS_OK && got.Fix == "" {
				t.Errorf("%v without a fix", got.Status)
			}
			if c.name == "missing" {
				return
			}
			if b, _ := os.ReadFile(seen); string(b) != want {
				t.Errorf("osascript got the script %q", b)
			}
			if b, _ := os.ReadFile(seen + ".argv"); strings.TrimSpace(string(b)) != "-" {
				t.Errorf("osascript argv %q, want just -", b)
			}
		})
	}
}

// A send refused for the Automation permission is recognised, so the
// agent can have the automation component look again; other failures
// are not.
func TestNotAuthorized(t *testing.T) {
	for env, want := range map[string]bool{"FAKEOSA_FAIL=-1743": true, "FAKEOSA_FAIL=-1728": false, "FAKEOSA_FAIL=-600": false} {
		h := newHarness(t, []string{env}, nil)
		_, err := h.exec(textTo(chatOne, "hello"))
		if err == nil || NotAuthorized(err) != want {
			t.Errorf("%s: NotAuthorized(%v) = %v, want %v", env, err, NotAuthorized(err), want)
		}
	}
	if NotAuthorized(nil) {
		t.Error("nil is not a refusal")
	}
}

// The tests' fake osascript answers the probes as a healthy Mac and logs
// nothing, so an agent's background probes leave the runs a test counts
// alone (also when the fake is told to fail or hang sends).
func TestFakeOsascriptAnswersProbes(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	p := NewProbe(ProbeOptions{OsascriptPath: fakeBin, Timeout: 5 * time.Second,
		Env: []string{"FAKEOSA_LOG=" + log, "FAKEOSA_HANG=1", "FAKEOSA_FAIL=-1743", "FAKEOSA_PIDS=" + filepath.Join(dir, "pids")}})
	if c := p.Automation(context.Background()); c.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Errorf("automation: %+v", c)
	}
	if c := p.Account(context.Background()); c.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Errorf("account: %+v", c)
	}
	if _, err := os.Stat(log); !os.IsNotExist(err) {
		t.Errorf("the fake logged a probe: %v", err)
	}
}
