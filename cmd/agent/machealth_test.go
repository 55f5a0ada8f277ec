package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/messages/applescript"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// writeFake writes an executable shell script standing in for one of the
// Mac's programs.
func writeFake(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakePSWithMessages lists launchd and Messages, as ps on a Mac does.
const fakePSWithMessages = `printf '    1 /sbin/launchd\n  412 /System/Applications/Messages.app/Contents/MacOS/Messages\n'`

// fakeOsascriptBody answers the probes as an authorized Mac with iMessage
// connected, and everything with -1743 once the file deny exists.
func fakeOsascriptBody(deny string) string {
	return `script=$(cat)
if [ -e '` + deny + `' ]; then echo "-:1:2: execution error: Not authorized to send Apple events to Messages. (-1743)" >&2; exit 1; fi
case "$script" in
*"every account"*) printf 'iMessage\ttrue\tconnected\n' ;;
*"to get name"*) echo authorized ;;
*) echo "fake osascript: unexpected script" >&2; exit 1 ;;
esac`
}

// The macOS backend, on this Linux machine against a fake ps and a fake
// osascript (real processes), reports the Mac's components under their
// names: messages, automation and icloud (the iMessage account beside the
// iCloud one) from the background probes; a send refused -1743 makes the
// automation component look again at once and go DOWN, long before its
// next round.
func TestMacBackendComponents(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	t.Setenv("HOME", dir) // no MobileMeAccounts.plist: iCloud is signed out
	st, err := sim.Create(filepath.Join(dir, "chat.db"), sim.WithLine("+15550000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chat, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	deny := filepath.Join(dir, "deny")
	cfg, err := agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Driver, cfg.DataDir, cfg.ChatDB = "macos", dir, filepath.Join(dir, "chat.db")
	cfg.Lines, cfg.HelperAddr = []string{"+15550000001"}, "127.0.0.1:0"
	cfg.PS = writeFake(t, dir, "ps", fakePSWithMessages)
	cfg.Osascript = writeFake(t, dir, "osascript", fakeOsascriptBody(deny))
	be, err := openBackend(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()

	report := func() map[string]*linev1.HealthComponent {
		m := map[string]*linev1.HealthComponent{}
		for _, c := range be.Components() {
			m[c.GetName()] = c
		}
		return m
	}
	waitComponents(t, "the probes' first looks", 10*time.Second, report, func(m map[string]*linev1.HealthComponent) bool {
		return m[component.Messages].GetStatus() == linev1.HealthStatus_HEALTH_STATUS_OK &&
			m[component.Automation].GetStatus() == linev1.HealthStatus_HEALTH_STATUS_OK &&
			strings.Contains(m[component.ICloud].GetDetail(), "iMessage: iMessage is signed in and connected")
	})
	m := report()
	for _, name := range []string{component.Helper, component.Lines, component.Messages, component.Automation, component.ICloud} {
		if m[name] == nil || m[name].GetSince() == nil {
			t.Errorf("component %s missing or without Since: %v", name, m[name])
		}
	}
	if ic := m[component.ICloud]; ic.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(ic.GetDetail(), "iCloud for chat backgrounds: not signed in") {
		t.Errorf("icloud: the iCloud part (signed out) is the worse and must show: %v", ic)
	}
	if !strings.Contains(m[component.Messages].GetDetail(), "pid 412") {
		t.Errorf("messages: %v", m[component.Messages])
	}

	// Permission withdrawn: a send is refused -1743, and the component
	// knows within seconds, not at its next round (5 minutes away).
	if err := os.WriteFile(deny, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = be.Driver.Execute(sctx, &linev1.Command{Id: "c1", Line: "+15550000001", Target: &linev1.Command_ChatGuid{ChatGuid: chat.GUID},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi"}}}, func(*linev1.CommandUpdate) {})
	if !applescript.NotAuthorized(err) {
		t.Fatalf("send with the permission withdrawn: %v", err)
	}
	waitComponents(t, "automation DOWN after the refused send", 10*time.Second, report, func(m map[string]*linev1.HealthComponent) bool {
		a := m[component.Automation]
		return a.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_DOWN && strings.Contains(a.GetDetail(), "Privacy & Security > Automation")
	})
}

// waitComponents polls report until ok, for at most limit.
func waitComponents(t *testing.T, what string, limit time.Duration, report func() map[string]*linev1.HealthComponent, ok func(map[string]*linev1.HealthComponent) bool) {
	t.Helper()
	for end := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		m := report()
		if ok(m) {
			return
		}
		if time.Now().After(end) {
			var b strings.Builder
			for n, c := range m {
				b.WriteString("\n  " + n + " " + c.GetStatus().String() + " " + c.GetDetail())
			}
			t.Fatalf("%s within %v; components:%s", what, limit, b.String())
		}
	}
}
