package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// macFakes is a Mac's programs as scripts sharing one state file (there
// while "Messages" runs): ps lists Messages while it runs and names pid
// 4242 /usr/bin/python3; lsof says 4242 holds any connection; osascript
// answers the probes, hangs on a send, quits Messages when asked; killall
// and open end and start it. Every run of osascript -e, killall and open
// is logged.
func macFakes(t *testing.T, dir, helperAddr string) (agent.Config, string) {
	t.Helper()
	state, log := filepath.Join(dir, "running"), filepath.Join(dir, "acts")
	if err := os.WriteFile(state, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Driver, cfg.DataDir, cfg.ChatDB = "macos", dir, filepath.Join(dir, "chat.db")
	cfg.Lines, cfg.HelperAddr = []string{"+15550000001"}, helperAddr
	cfg.PS = writeFake(t, dir, "ps", `if [ "$1" = -axo ]; then echo "    1 /sbin/launchd"; [ -f `+state+` ] && echo "  412 /System/Applications/Messages.app/Contents/MacOS/Messages"; else echo /usr/bin/python3; fi; exit 0`)
	cfg.Lsof = writeFake(t, dir, "lsof", `peer=${2#-iTCP@}; echo p4242; echo "n$peer->`+helperAddr+`"`)
	cfg.Codesign = writeFake(t, dir, "codesign", `exit 1`)
	cfg.Osascript = writeFake(t, dir, "osascript", `if [ "$1" = -e ]; then echo "osascript $2" >> `+log+`; rm -f `+state+`; exit 0; fi
script=$(cat)
case "$script" in
*"every account"*) printf 'iMessage\ttrue\tconnected\n' ;;
*"to get name"*) echo authorized ;;
*) sleep 30 ;;
esac`)
	cfg.Killall = writeFake(t, dir, "killall", `echo "killall $*" >> `+log+`; rm -f `+state)
	cfg.Open = writeFake(t, dir, "open", `echo "open $*" >> `+log+`; touch `+state)
	return cfg, log
}

func openFakeMac(t *testing.T, cfg agent.Config) (agent.Backend, func() map[string]*linev1.HealthComponent, string) {
	t.Helper()
	ctx := context.Background()
	st, err := sim.Create(cfg.ChatDB, sim.WithLine(cfg.Lines[0]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	chat, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	be, err := openBackend(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	report := func() map[string]*linev1.HealthComponent {
		m := map[string]*linev1.HealthComponent{}
		for _, c := range be.Components() {
			m[c.GetName()] = c
		}
		return m
	}
	return be, report, chat.GUID
}

// The macOS backend checks who dials the helper port (on by default): a
// process that is not Messages is refused before a frame, and the helper
// component says so.
func TestMacBackendRefusesAStranger(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	addr := freeAddr(t)
	cfg, _ := macFakes(t, dir, addr)
	_, report, _ := openFakeMac(t, cfg)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, `{"event":"ping","process":"com.apple.MobileSMS"}`+"\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Closed (or reset: its greeting was never read) without a byte.
	got, err := io.ReadAll(bufio.NewReader(c))
	var ne net.Error
	if len(got) > 0 || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the stranger read %q, %v: want the connection closed at once", got, err)
	}
	waitComponents(t, "the refusal in the helper component", 10*time.Second, report, func(m map[string]*linev1.HealthComponent) bool {
		h := m[component.Helper]
		return h.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_DOWN && strings.Contains(h.GetDetail(), "refused 1 connection from /usr/bin/python3 (pid 4242)")
	})
}

// Three sends whose osascript runs time out make the macOS backend
// restart Messages with the configured programs, and the messages
// component tells when and why.
func TestMacBackendRestartsHangingMessages(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	cfg, log := macFakes(t, dir, freeAddr(t))
	be, report, chat := openFakeMac(t, cfg)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := be.Driver.Execute(ctx, &linev1.Command{Id: "c" + string(rune('1'+i)), Line: cfg.Lines[0], Target: &linev1.Command_ChatGuid{ChatGuid: chat},
			Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi"}}}, func(*linev1.CommandUpdate) {})
		cancel()
		if err == nil {
			t.Fatal("a send to a hung Messages succeeded")
		}
	}
	waitComponents(t, "the restart in the messages component", 15*time.Second, report, func(m map[string]*linev1.HealthComponent) bool {
		return strings.Contains(m[component.Messages].GetDetail(), "Messages restarted once in the last hour") &&
			strings.Contains(m[component.Messages].GetDetail(), "because 3 osascript runs in a row timed out") &&
			strings.Contains(m[component.Messages].GetDetail(), "quit and reopened, running again")
	})
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b); got != "osascript tell application \"Messages\" to quit\nopen -g -a Messages\n" {
		t.Fatalf("the restart ran:\n%s", got)
	}
	// And the relay hears it: the backend hands the agent an event.
	select {
	case ev := <-be.Events:
		r := ev.GetMessagesRestarted()
		if r == nil || !r.GetRunning() || !strings.Contains(r.GetReason(), "3 osascript runs in a row timed out") ||
			!strings.HasPrefix(ev.GetKey(), "agent/messages_restarted/") || ev.GetDate() == nil || ev.GetChatGuid() != "" {
			t.Fatalf("restart event %v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no restart event from the backend")
	}
}
