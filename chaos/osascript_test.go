package chaos

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// macAgent starts a stack whose agent runs the macos driver on Linux: it
// reads a chat.db the simulated Messages created and sends through the
// fake osascript (messages/applescript's), which writes its rows into that
// chat.db from its own process as Messages does. While the file hangFlag
// exists, osascript runs hang as mode says (FAKEOSA_HANG: before sending;
// FAKEOSA_HANG_AFTER_SEND: after Messages sent). It returns the stack and
// one chat GUID per peer.
func macAgent(ctx context.Context, t *testing.T, hangFlag, mode string) (st *localstack.Stack, chats []string, chatDB string) {
	t.Helper()
	dir := t.TempDir()
	fake := filepath.Join(dir, "fakeosascript")
	build := exec.CommandContext(ctx, "go", "build", "-o", fake, "github.com/line-agent/line-agent/messages/applescript/internal/fakeosascript")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the fake osascript: %v\n%s", err, out)
	}
	chatDB = filepath.Join(dir, "chat.db")
	const line = "+15550000001"
	w, err := sim.Create(chatDB, sim.WithLine(line))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		c, err := w.EnsureChat(ctx, sim.ChatSpec{Participants: []string{p}})
		if err != nil {
			t.Fatal(err)
		}
		chats = append(chats, c.GUID)
	}
	w.Close()
	// osascript gets the agent's minimal environment: the settings ride in
	// a fixed wrapper (no value of a command in it), which execs the fake.
	wrapper := filepath.Join(dir, "osascript")
	script := "#!/bin/sh\n" +
		"if [ -e '" + hangFlag + "' ]; then hang=" + mode + "=1; else hang=FAKEOSA_QUIET=1; fi\n" +
		"exec env FAKEOSA_LOG='" + filepath.Join(dir, "osascript.log") + "' FAKEOSA_DB='" + chatDB + "' FAKEOSA_PIDS='" + filepath.Join(dir, "pids") + "' \"$hang\" '" + fake + "' \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	helper, err := localstack.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	st = startWith(ctx, t, localstack.Options{
		Driver: "macos", Unhealthy: true,
		AgentEnv: []string{"LINE_AGENT_CHAT_DB=" + chatDB, "LINE_AGENT_OSASCRIPT=" + wrapper, "LINE_AGENT_LINES=" + line,
			"LINE_AGENT_HELPER_ADDR=" + helper, "LINE_AGENT_RECONCILE_SETTLE=1s"},
	})
	t.Cleanup(func() { killHung(filepath.Join(dir, "pids")) })
	return st, chats, chatDB
}

// killHung ends the hanging fake osascript runs (and their children) the
// agent left, if any.
func killHung(pidsFile string) {
	b, err := os.ReadFile(pidsFile)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	}
}

// TestOsascriptHangs makes osascript hang, before Messages sent and after
// it sent: a hang before is a failure with nothing sent (the run is
// killed at the command's deadline), a hang after is the truth chat.db
// shows; nothing is doubled, nothing falsely acknowledged, and sends work
// again once osascript does.
func TestOsascriptHangs(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	for _, mode := range []struct{ env, what string }{
		{"FAKEOSA_HANG", "osascript hangs before Messages sends"},
		{"FAKEOSA_HANG_AFTER_SEND", "osascript hangs after Messages sent"},
	} {
		t.Run(mode.env, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			flag := filepath.Join(t.TempDir(), "hang")
			if err := os.WriteFile(flag, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			st, chats, chatDB := macAgent(ctx, t, flag, mode.env)
			line := st.Agent.Lines[0]
			mk := func(prefix string, i int, deadline time.Duration) *linev1.Command {
				c := sendText(prefix, i, line)
				c.Target = &linev1.Command_ChatGuid{ChatGuid: chats[i%len(chats)]}
				c.Deadline = timestamppb.New(time.Now().Add(deadline))
				return c
			}
			hung := []*linev1.Command{mk("hung-"+mode.env, 0, 8*time.Second), mk("hung-"+mode.env, 1, 8*time.Second)}
			submitAll(ctx, t, st, hung, 0)
			fin := finals(ctx, st, hung, time.Minute)
			if err := os.Remove(flag); err != nil {
				t.Fatal(err)
			}
			at := time.Now()
			ok := []*linev1.Command{mk("after-"+mode.env, 0, time.Minute), mk("after-"+mode.env, 1, time.Minute)}
			submitAll(ctx, t, st, ok, 0)
			fin2 := finals(ctx, st, ok, time.Minute)
			for _, c := range ok {
				if v := fin2[c.Id]; v == nil || v.State != "succeeded" {
					t.Errorf("%s once osascript works again: %+v, want succeeded", c.Id, v)
				}
				fin[c.Id] = fin2[c.Id]
			}
			all := append(hung, ok...)
			r := judge(t, all, fin, outgoingTexts(ctx, t, chatDB))
			r.fault, r.runs, r.recover = mode.what, len(hung), []time.Duration{time.Since(at)}
			for _, c := range hung {
				if v := fin[c.Id]; v != nil {
					r.note += c.Id + " " + v.State
					if v.Error != nil {
						r.note += " " + v.Error.Code
					}
					r.note += "; "
				}
			}
			record(t, r)
		})
	}
}
