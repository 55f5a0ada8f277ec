package main

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/pkg/typedstream"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// sentRow is one outgoing row of the simulated chat.db.
type sentRow struct {
	chat, text string
	sent       bool
}

// sentRows reads the outgoing rows of the simulated chat.db (read-only),
// oldest first, with their text decoded from attributedBody.
func (r *crashRig) sentRows() []sentRow {
	r.t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(r.agentDir, "sim", "chat.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT c.guid, m.attributedBody, m.is_sent FROM message m
		JOIN chat_message_join j ON j.message_id = m.ROWID JOIN chat c ON c.ROWID = j.chat_id
		WHERE m.is_from_me = 1 ORDER BY m.ROWID`)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rows.Close()
	var out []sentRow
	for rows.Next() {
		var s sentRow
		var body []byte
		if err := rows.Scan(&s.chat, &body, &s.sent); err != nil {
			r.t.Fatal(err)
		}
		if as, err := typedstream.Decode(body); err == nil {
			s.text = as.Text
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// TestAgentKilledMidBurstRunsWhatNeverStarted: a burst of sends to a few
// chats, each send taking 400 ms in the simulated Messages, and a SIGKILL
// in the middle of it. Only the sends Messages was working on at the kill
// (one per chat) may end IN_DOUBT; every send that left no row in chat.db
// must be run by the relay's redelivery after the restart and succeed, and
// nothing is sent twice.
func TestAgentKilledMidBurstRunsWhatNeverStarted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real processes")
	}
	agentBin, relayBin := buildBinaries(t)
	r := startCrashRig(t, agentBin, relayBin)
	start := func() *proc {
		a := startProc(t, r.agentLog, r.agentBin, "run", "--data", r.agentDir, "--driver", "sim",
			"--sim-latency", "400ms", "--sim-reply-delay", "1h")
		waitHealthy(t, r.api, 20*time.Second, a, r.relay)
		return a
	}
	a := start()

	const chats, perChat = 3, 8
	var ids []string
	text := map[string]string{}
	ctx := context.Background()
	for n := range perChat {
		for c := range chats {
			id := fmt.Sprintf("burst-%d-%d", c, n)
			text[id] = fmt.Sprintf("burst text %d of chat %d", n, c)
			cmd := &linev1.Command{Id: id, Line: e2eLine,
				Target:   &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{fmt.Sprintf("+1555765430%d", c)}}},
				Deadline: timestamppb.New(time.Now().Add(50 * time.Second)),
				Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: text[id]}}}
			if _, _, err := r.api.Submit(ctx, cmd); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}

	// Kill when every chat has two sends done and its third in Messages'
	// hands (its row written, not yet sent): the commands queued behind them
	// were all accepted by then, and no chat is between marking a command
	// started and Messages writing its row.
	var atKill []sentRow
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		rows := r.sentRows()
		count, newest := map[string]int{}, map[string]sentRow{}
		for _, s := range rows {
			count[s.chat]++
			newest[s.chat] = s
		}
		ready := len(count) == chats
		for c, n := range count {
			ready = ready && n >= 3 && !newest[c].sent
		}
		if ready {
			a.kill()
			atKill = r.sentRows()
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the burst never reached its third send in every chat: %+v\n%s", rows, a.logText())
		}
	}
	had := map[string]bool{}
	for _, s := range atKill {
		had[s.text] = true
	}
	if len(atKill) >= chats*perChat {
		t.Fatalf("every send had reached chat.db before the kill (%d rows): the kill came too late to test anything", len(atKill))
	}

	a = start()
	inDoubt := 0
	for _, id := range ids {
		v := r.final(id, 40*time.Second, a)
		switch {
		case v.State == "succeeded":
		case v.State == "failed" && v.Error != nil && v.Error.Code == "IN_DOUBT":
			inDoubt++
			if !had[text[id]] {
				t.Errorf("%s had no row in chat.db at the kill but ended IN_DOUBT instead of being run after the restart", id)
			}
		default:
			t.Errorf("%s ended %s %+v", id, v.State, errView(v))
		}
	}
	if inDoubt > chats {
		t.Errorf("%d commands IN_DOUBT; at most %d (one per chat) were in Messages' hands at the kill", inDoubt, chats)
	}
	seen := map[string]int{}
	for _, s := range r.sentRows() {
		seen[s.text]++
	}
	for _, id := range ids {
		if seen[text[id]] > 1 {
			t.Errorf("%q is in chat.db %d times", text[id], seen[text[id]])
		}
	}
	if t.Failed() {
		t.Logf("agent log:\n%s", a.logText())
	} else {
		t.Logf("%d rows at the kill, %d IN_DOUBT, %d run after the restart", len(atKill), inDoubt, chats*perChat-len(atKill))
	}
	if !strings.Contains(a.logText(), "never started before the last stop are forgotten") {
		t.Errorf("the restarted agent did not log the forgotten commands")
	}

	// Every file the agent wrote (state.db, the simulated chat.db, their
	// -wal and -shm, credentials, the relay CA) is private to its user.
	var files int
	err := filepath.WalkDir(r.agentDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil || files < 8 {
		t.Errorf("walked %d files of the data directory: %v", files, err)
	}
}

func errView(v *relay.CommandView) any {
	if v.Error == nil {
		return nil
	}
	return *v.Error
}
