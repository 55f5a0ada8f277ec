package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// macRig is the macOS driver on Linux, as real as it gets: line-agent
// --driver macos reading a chat.db that messages/sim created, sending
// through a fake osascript (messages/applescript's) that writes the row
// into it from its own process, as Messages does, and that a kill -9 of
// the agent does not stop (osascript runs in its own process group).
type macRig struct {
	*crashRig
	chatDB, fakeLog string
	chat            string
}

// startMacRig enrolls an agent and prepares chat.db and the fake
// osascript; env adds FAKEOSA_* settings for every run.
func startMacRig(t *testing.T, env ...string) *macRig {
	t.Helper()
	agentBin, relayBin := buildBinaries(t)
	r := &macRig{crashRig: startCrashRig(t, agentBin, relayBin)}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fakeosascript")
	build := exec.Command("go", "build", "-o", fake, "../../messages/applescript/internal/fakeosascript")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the fake osascript: %v\n%s", err, out)
	}
	r.chatDB, r.fakeLog = filepath.Join(dir, "chat.db"), filepath.Join(dir, "osascript.log")
	st, err := sim.Create(r.chatDB, sim.WithLine(e2eLine))
	if err != nil {
		t.Fatal(err)
	}
	chat, err := st.EnsureChat(context.Background(), sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	r.chat = chat.GUID
	// osascript's environment is the agent's minimal one: the settings
	// ride in a wrapper, which execs the fake (same pid).
	wrapper := filepath.Join(dir, "osascript")
	script := "#!/bin/sh\nexec env FAKEOSA_LOG='" + r.fakeLog + "' FAKEOSA_DB='" + r.chatDB + "' " + strings.Join(env, " ") + " '" + fake + "' \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LINE_AGENT_CHAT_DB", r.chatDB)
	t.Setenv("LINE_AGENT_OSASCRIPT", wrapper)
	t.Setenv("LINE_AGENT_LINES", e2eLine)
	t.Setenv("LINE_AGENT_HELPER_ADDR", freeAddr(t))
	t.Setenv("LINE_AGENT_RECONCILE_SETTLE", "1s")
	t.Cleanup(r.killFakes)
	return r
}

// start runs the agent and waits until the relay shows it connected (no
// private-API helper connects, so its health says DOWN: that is right).
func (r *macRig) start() *proc {
	r.t.Helper()
	a := startProc(r.t, r.agentLog, r.agentBin, "run", "--data", r.agentDir, "--driver", "macos")
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) { // a real relay's API: nothing announces it
		as, err := r.api.Agents(context.Background())
		if err == nil && len(as) == 1 && as[0].Connected {
			return a
		}
		if time.Now().After(end) {
			r.t.Fatalf("agent not connected:\n%s", a.logText())
		}
	}
}

// send submits a text to the rig's chat.
func (r *macRig) send(id, text string) {
	r.t.Helper()
	cmd := &linev1.Command{Id: id, Line: e2eLine, Target: &linev1.Command_ChatGuid{ChatGuid: r.chat},
		Deadline: timestamppb.New(time.Now().Add(60 * time.Second)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: text}}}
	if _, _, err := r.api.Submit(context.Background(), cmd); err != nil {
		r.t.Fatal(err)
	}
}

// outgoing is chat.db's outgoing rows with text: GUID and is_sent.
func (r *macRig) outgoing(text string) map[string]bool {
	r.t.Helper()
	db, err := sql.Open("sqlite", "file:"+r.chatDB+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT guid, attributedBody, is_sent FROM message WHERE is_from_me = 1`)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var guid string
		var body []byte
		var sent bool
		if err := rows.Scan(&guid, &body, &sent); err != nil {
			r.t.Fatal(err)
		}
		if strings.Contains(string(body), text) {
			out[guid] = sent
		}
	}
	return out
}

// fakePids are the pids of every osascript run the fake logged.
func (r *macRig) fakePids() []int {
	f, err := os.Open(r.fakeLog)
	if err != nil {
		return nil
	}
	defer f.Close()
	var pids []int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Pid int `json:"pid"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Pid > 0 {
			pids = append(pids, rec.Pid)
		}
	}
	return pids
}

// killFakes ends the osascript runs the agent's kill left behind.
func (r *macRig) killFakes() {
	for _, pid := range r.fakePids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestKilledAfterSendReconcilesToSucceeded: Messages sent the text (its
// row is in chat.db, sent) while osascript had not answered yet, and the
// agent is killed with kill -9 before any result is durable. After the
// restart the command is succeeded with that row's GUID, not IN_DOUBT,
// although its osascript run still hangs, and chat.db holds the text once.
func TestKilledAfterSendReconcilesToSucceeded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real processes")
	}
	r := startMacRig(t, "FAKEOSA_HANG_AFTER_SEND=1")
	a := r.start()
	r.send("rc-sent", "reconcile me")
	var guid string
	for end := time.Now().Add(20 * time.Second); guid == ""; time.Sleep(5 * time.Millisecond) { // chat.db written by another process
		for g, sent := range r.outgoing("reconcile me") {
			if sent {
				guid = g
			}
		}
		if time.Now().After(end) {
			t.Fatalf("the send never reached chat.db:\n%s", a.logText())
		}
	}
	a.kill()
	if v, err := r.api.Command(context.Background(), "rc-sent"); err != nil || v.State == "succeeded" || v.State == "failed" {
		t.Fatalf("the command was final before the kill (%+v, %v): the kill came too late to test anything", v, err)
	}
	pids := r.fakePids()
	if len(pids) != 1 || syscall.Kill(pids[0], 0) != nil {
		t.Fatalf("the osascript run should outlive the agent: pids %v", pids)
	}

	a = r.start()
	v := r.final("rc-sent", 30*time.Second, a)
	if v.State != "succeeded" {
		t.Fatalf("after the restart: %s %+v; want succeeded\n%s", v.State, errView(v), a.logText())
	}
	var snap struct {
		MessageGUID string `json:"message_guid"`
	}
	if err := json.Unmarshal(v.Result, &snap); err != nil || snap.MessageGUID != guid {
		got := snap.MessageGUID
		t.Fatalf("succeeded with message %s (%v); chat.db's row is %s", got, err, guid)
	}
	if rows := r.outgoing("reconcile me"); len(rows) != 1 {
		t.Fatalf("chat.db has the text %d times; want once: %v", len(rows), rows)
	}
	if n := len(r.fakePids()); n != 1 {
		t.Fatalf("osascript ran %d times; want once", n)
	}
	if !strings.Contains(a.logText(), "reconciled: chat.db shows it done") {
		t.Errorf("the restarted agent did not log the reconciliation:\n%s", a.logText())
	}
}

// TestKilledBeforeAnyRowReconcilesToNotSent: Messages took the request
// but wrote no row, and the agent is killed while it waits for one. After
// the restart, with osascript gone and the settling time passed, the
// command fails NOT_SENT (a retry is safe) and nothing was sent.
func TestKilledBeforeAnyRowReconcilesToNotSent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real processes")
	}
	r := startMacRig(t, "FAKEOSA_NO_ROW=1")
	a := r.start()
	r.send("rc-none", "never there")
	for end := time.Now().Add(20 * time.Second); len(r.fakePids()) == 0; time.Sleep(5 * time.Millisecond) { // the fake's log, another process
		if time.Now().After(end) {
			t.Fatalf("osascript never ran:\n%s", a.logText())
		}
	}
	time.Sleep(200 * time.Millisecond) // the agent is now waiting for a row that never comes
	a.kill()

	a = r.start()
	v := r.final("rc-none", 40*time.Second, a)
	if v.State != "failed" || v.Error == nil || v.Error.Code != "NOT_SENT" {
		t.Fatalf("after the restart: %s %+v; want failed NOT_SENT\n%s", v.State, errView(v), a.logText())
	}
	if rows := r.outgoing("never there"); len(rows) != 0 {
		t.Fatalf("chat.db has %d rows of a command reported NOT_SENT", len(rows))
	}
	if n := len(r.fakePids()); n != 1 {
		t.Fatalf("osascript ran %d times; want once (never again after the restart)", n)
	}
}
