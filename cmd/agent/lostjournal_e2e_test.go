package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/relay/opclient"
)

// sqliteCount runs a count(*) query on an SQLite file another process writes,
// read-only; -1 while it cannot be read (not created yet).
func sqliteCount(t *testing.T, path, query string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil {
		return -1
	}
	return n
}

// waitSQLiteCount waits (bounded) until sqliteCount(path, query) is want.
func waitSQLiteCount(t *testing.T, path, query string, want int, limit time.Duration, logs ...*proc) {
	t.Helper()
	n := 0
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n = sqliteCount(t, path, query); n == want {
			return
		}
	}
	var out string
	for _, p := range logs {
		out += p.logText()
	}
	t.Fatalf("%s on %s: %d, want %d within %v\n%s", query, filepath.Base(path), n, want, limit, out)
}

// TestLostStateDBRereadsChatDBAfterKill is the lost-journal figure with real
// processes: 500 messages arrive while the relay is down, the agent is
// killed with all of them unacknowledged and its state.db deleted, and the
// agent starts again before the relay does (no new enrollment). Once the
// relay is back, all 500 reach it once, in order.
func TestLostStateDBRereadsChatDBAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real processes")
	}
	agentBin, relayBin := buildBinaries(t)
	r := startCrashRig(t, agentBin, relayBin)
	relayArgs := r.relay.cmd.Args[1:]
	relayDir := relayArgs[slices.Index(relayArgs, "--data")+1]
	statePath := filepath.Join(r.agentDir, "state.db")
	run := func() *proc {
		return startProc(t, r.agentLog, agentBin, "run", "--data", r.agentDir, "--driver", "sim", "--sim-reply-delay", "1h")
	}
	// chat.db's past before the first start: history, never reported,
	// neither then nor by the lost journal's re-read.
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Join(r.agentDir, "sim"), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := sim.Create(filepath.Join(r.agentDir, "sim", "chat.db"), sim.WithLine(e2eLine))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chat, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{e2ePeer}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("history %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	a := run()
	waitHealthy(t, r.api, 20*time.Second, a, r.relay)
	// The relay has a cursor mark once the agent's first stream is up.
	waitSQLiteCount(t, filepath.Join(relayDir, "relay.db"), `SELECT count(*) FROM agents WHERE chatdb_cursor IS NOT NULL`, 1, 20*time.Second, a, r.relay)
	r.relay.kill()

	const n = 500
	msgs := make([]sim.Msg, n)
	for i := range msgs {
		msgs[i] = sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("lost %03d", i)}
	}
	if _, err := st.InsertBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	waitSQLiteCount(t, statePath, `SELECT count(*) FROM outbox`, n, 20*time.Second, a)
	a.kill()
	m, _ := filepath.Glob(statePath + "*")
	for _, p := range m {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}

	a = run()
	// The relay is down: the new journal must not start at the end of
	// chat.db meanwhile.
	time.Sleep(time.Second)
	if c := sqliteCount(t, statePath, `SELECT count(*) FROM kv WHERE k = 'chatdb_cursor'`); c != 0 {
		t.Fatalf("the new journal has a chat.db cursor before the relay answered\n%s", a.logText())
	}
	r.relay = startProc(t, filepath.Join(filepath.Dir(r.agentLog), "relay.log"), relayBin, relayArgs...)
	waitHealthy(t, r.api, 20*time.Second, a, r.relay)
	var texts []string
	var after int64
	read := func() {
		page, err := r.api.Events(ctx, after, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Events {
			if ev, err := opclient.Event(v); err == nil && ev.GetMessage() != nil {
				texts = append(texts, ev.GetMessage().GetText())
			}
		}
		after = page.Next
	}
	for deadline := time.Now().Add(30 * time.Second); len(texts) < n && time.Now().Before(deadline); {
		read()
	}
	// Everything acknowledged is stored: one more read shows any double.
	waitSQLiteCount(t, statePath, `SELECT count(*) FROM outbox`, 0, 30*time.Second, a, r.relay)
	read()
	if len(texts) != n {
		t.Fatalf("%d message events at the relay, want the %d lost ones once each: %q\n%s", len(texts), n, texts, a.logText())
	}
	for i, s := range texts {
		if want := fmt.Sprintf("lost %03d", i); s != want {
			t.Fatalf("event %d is %q, want %q", i, s, want)
		}
	}
}
