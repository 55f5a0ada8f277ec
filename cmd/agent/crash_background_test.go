package main

import (
	"context"
	"database/sql"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
	"howett.net/plist"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

// crashRig is a real relay process and an enrolled agent data directory;
// the agent is started (and killed) by the test.
type crashRig struct {
	t        *testing.T
	agentBin string
	agentDir string
	agentLog string
	relay    *proc
	api      *opclient.Client
}

func startCrashRig(t *testing.T, agentBin, relayBin string) *crashRig {
	t.Helper()
	dir := t.TempDir()
	relayDir, agentDir := filepath.Join(dir, "relay"), filepath.Join(dir, "agent")
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	tok, err := exec.Command(relayBin, "token", "create", "--data", relayDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	r := startProc(t, filepath.Join(dir, "relay.log"), relayBin, "serve", "--data", relayDir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr)
	api := opclient.New(httpAddr)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := api.Agents(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay not up:\n%s", r.logText())
		}
	}
	enroll := exec.Command(agentBin, "enroll", "--relay", grpcAddr, "--ca", filepath.Join(relayDir, "ca.pem"), "--token-file", "-", "--data", agentDir)
	enroll.Stdin = strings.NewReader(string(tok))
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	return &crashRig{t: t, agentBin: agentBin, agentDir: agentDir, agentLog: filepath.Join(dir, "agent.log"), relay: r, api: api}
}

// startAgent runs the agent on the rig's data directory and waits until the
// relay shows it connected and healthy.
func (r *crashRig) startAgent() *proc {
	r.t.Helper()
	a := startProc(r.t, r.agentLog, r.agentBin, "run", "--data", r.agentDir, "--driver", "sim",
		"--sim-reply-delay", "50ms", "--sim-background-delay", "4s")
	waitHealthy(r.t, r.api, 20*time.Second, a, r.relay)
	return a
}

func (r *crashRig) final(id string, limit time.Duration, a *proc) *relay.CommandView {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	v, err := r.api.Final(ctx, id, nil)
	if err != nil {
		r.t.Fatalf("%s not final in %v: %v\n%s", id, limit, err, a.logText())
	}
	return v
}

// chat sends a text to a participant and returns the chat it went to.
func (r *crashRig) chat(a *proc) string {
	r.t.Helper()
	c := &linev1.Command{Id: "crash-chat", Line: e2eLine,
		Target:   &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{e2ePeer}}},
		Deadline: timestamppb.New(time.Now().Add(20 * time.Second)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hello"}}}
	if _, _, err := r.api.Submit(context.Background(), c); err != nil {
		r.t.Fatal(err)
	}
	v := r.final(c.Id, 20*time.Second, a)
	s := &linev1.Snapshot{}
	if v.State != "succeeded" || protojson.Unmarshal(v.Result, s) != nil || s.GetChatGuid() == "" {
		r.t.Fatalf("send_text: %s %+v %s", v.State, v.Error, v.Result)
	}
	return s.GetChatGuid()
}

// uploading posts set_background and waits until the relay shows it
// uploading.
func (r *crashRig) uploading(id, chat string, a *proc) {
	r.t.Helper()
	c := &linev1.Command{Id: id, Line: e2eLine, Target: &linev1.Command_ChatGuid{ChatGuid: chat},
		Deadline: timestamppb.New(time.Now().Add(60 * time.Second)),
		Kind: &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{
			Source: &linev1.SetBackground_Data{Data: pngBytes}, MimeType: "image/png"}}}
	if _, _, err := r.api.Submit(context.Background(), c); err != nil {
		r.t.Fatal(err)
	}
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		v, err := r.api.Command(context.Background(), id)
		if err != nil {
			continue
		}
		if v.State == "in_progress" && v.Progress != nil && v.Progress.Stage == "uploading" {
			return
		}
		if v.State == "succeeded" || v.State == "failed" {
			r.t.Fatalf("%s final before the kill: %s %+v", id, v.State, v.Error)
		}
	}
	r.t.Fatalf("%s never uploading\n%s", id, a.logText())
}

// simRecords lists the simulated Messages' records of uploads in flight.
func (r *crashRig) simRecords() []string {
	r.t.Helper()
	m, err := filepath.Glob(filepath.Join(r.agentDir, "sim", "uploads", "*.json"))
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

// evidence reads the simulated chat.db (read-only): the background-set rows
// of chat and the trabaid its properties carry.
func (r *crashRig) evidence(chat string) (setRows int, trabaid string) {
	r.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(r.agentDir, "sim", "chat.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow(`SELECT count(*) FROM message m JOIN chat_message_join j ON j.message_id = m.ROWID JOIN chat c ON c.ROWID = j.chat_id
		WHERE c.guid = ? AND m.item_type = 3 AND m.group_action_type = 4`, chat).Scan(&setRows); err != nil {
		r.t.Fatal(err)
	}
	var all int
	if err := db.QueryRow(`SELECT count(*) FROM message WHERE item_type = 3 AND group_action_type = 4`).Scan(&all); err != nil {
		r.t.Fatal(err)
	}
	if all != setRows {
		r.t.Fatalf("%d background-set rows in chat.db, %d in the chat", all, setRows)
	}
	var raw []byte
	if err := db.QueryRow(`SELECT properties FROM chat WHERE guid = ?`, chat).Scan(&raw); err != nil {
		r.t.Fatal(err)
	}
	var props map[string]any
	if len(raw) > 0 {
		if _, err := plist.Unmarshal(raw, &props); err != nil {
			r.t.Fatal(err)
		}
	}
	bp, _ := props["backgroundProperties"].(map[string]any)
	trabaid, _ = bp["trabaid"].(string)
	return setRows, trabaid
}

// TestAgentKilledDuringUploadAndRestarted: the agent is SIGKILLed while a
// background uploads (the simulated Messages, like the real one, keeps the
// upload going); restarted on the same data directory, the command still
// ends with exactly one truthful result: one success, one background-set
// row, the result's asset the one chat.db shows.
func TestAgentKilledDuringUploadAndRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real processes")
	}
	agentBin, relayBin := buildBinaries(t)
	for _, tc := range []struct {
		name string
		down time.Duration // how long the agent stays dead
	}{
		{"restarted at once", 0},
		{"down past the upload's end", 6 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startCrashRig(t, agentBin, relayBin)
			a := r.startAgent()
			chat := r.chat(a)
			const id = "crash-background"
			r.uploading(id, chat, a)

			a.kill() // SIGKILL mid-upload: no Goodbye, no cleanup
			if recs := r.simRecords(); len(recs) != 1 {
				t.Fatalf("the simulated Messages recorded %d uploads in flight, want 1", len(recs))
			}
			if n, _ := r.evidence(chat); n != 0 {
				t.Fatalf("%d background-set rows before the upload's end", n)
			}
			time.Sleep(tc.down)
			a = r.startAgent()

			v := r.final(id, 60*time.Second, a)
			s := &linev1.Snapshot{}
			if v.State != "succeeded" || protojson.Unmarshal(v.Result, s) != nil || s.GetAssetId() == "" || s.GetChatGuid() != chat {
				t.Fatalf("want one success with an asset id, got %s %+v %s\n%s", v.State, v.Error, v.Result, a.logText())
			}
			rows, trabaid := r.evidence(chat)
			if rows != 1 || trabaid != s.GetAssetId() {
				t.Fatalf("chat.db: %d background-set rows, trabaid %q; the result says %q", rows, trabaid, s.GetAssetId())
			}
			if recs := r.simRecords(); len(recs) != 0 {
				t.Fatalf("finished upload still recorded: %v", recs)
			}
			// The result is final: nothing later replaces it, and no second
			// upload writes a second row.
			time.Sleep(2 * time.Second)
			again, err := r.api.Command(context.Background(), id)
			if err != nil || again.State != "succeeded" || string(again.Result) != string(v.Result) {
				t.Fatalf("the relay's view changed after the result: %v %+v", err, again)
			}
			if rows, _ := r.evidence(chat); rows != 1 {
				t.Fatalf("%d background-set rows after the result", rows)
			}
		})
	}
}
