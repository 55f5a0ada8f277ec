package agent

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/relay/opclient"
)

// TestEventsWrittenWhileRelayIsAwayArriveOnceInOrder is the "nothing lost"
// promise end to end: rows written to a real chat.db while the relay is down
// reach the restarted relay, each once, in order.
//
// It once failed under a wide parallel run (docs/reliability.md, "The
// once-flaky test"): it wrote its first rows as soon as the relay saw the
// agent connected, and under load the tailer took its starting point, the
// end of chat.db, only after some of them, so they were history and never
// events. It now waits for that starting point first.
func TestEventsWrittenWhileRelayIsAwayArriveOnceInOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	relayDir := t.TempDir()
	r := startRelay(t, relayDir, "127.0.0.1:0")
	addr := r.GRPCAddr()

	m, err := sim.New(ctx, sim.Options{Dir: t.TempDir(), Remote: sim.RemoteOptions{Disabled: true}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	chat, err := m.Store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	// Only events flow here: the rows are written with the Store, as the
	// simulated Messages records what arrives; no command is run.
	a := enrolledAgent(t, r, dataDir, &countingDriver{}, &Backoff{Base: 50 * time.Millisecond, Cap: 300 * time.Millisecond})
	a.o.Backend.Tailer = chatdb.NewTailer(chatdb.TailerOptions{Path: m.ChatDBPath(), Logger: testLogger(t)})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	waitConnected(t, r, true, 10*time.Second)
	base := waitBaseline(t, a.journal, 20*time.Second)

	var rowids []int64 // chat.db ROWID of "msg i", for the failure messages
	say := func(i int) {
		row, err := m.Store.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("msg %03d", i)})
		if err != nil {
			t.Fatal(err)
		}
		rowids = append(rowids, row.RowID)
	}
	for i := range 5 {
		say(i)
	}
	// Let the first ones through, then take the relay away and keep talking.
	waitEvents(t, r, a.journal, 5, 10*time.Second)
	r.Close()
	for i := 5; i < 60; i++ {
		say(i)
	}
	// The tailer commits them to the outbox while the relay is away (the
	// first five may be acked or not).
	waitOutbox(t, a.journal, 20*time.Second, "the 55 new events in the outbox", func(n int) bool { return n >= 55 })
	r = startRelay(t, relayDir, addr)
	defer r.Close()
	got := waitEvents(t, r, a.journal, 60, 30*time.Second)
	for i, text := range got {
		if want := fmt.Sprintf("msg %03d", i); text != want {
			t.Fatalf("event %d is %q, want %q (rows: baseline ROWID %d, msg 000.. at %v)\nall: %q\n%s",
				i, text, want, base, rowids, got, views(r, a.journal))
		}
	}
	cancel()
	<-done
}

// waitBaseline waits (bounded) until the tailer of a freshly enrolled agent
// has taken its starting point, the end of chat.db, and stored it, and
// returns the ROWID it starts after. A row written before then is history,
// not news, and is never an event: the relay seeing the agent connected
// says nothing about the tailer, which starts beside the session.
func waitBaseline(t *testing.T, j *Journal, limit time.Duration) int64 {
	t.Helper()
	var c []byte
	if !eventually(limit, func() bool { c, _ = j.Cursor(context.Background()); return c != nil }) {
		t.Fatalf("the tailer stored no chat.db cursor within %v", limit)
	}
	info, err := chatdb.DescribeCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	return info.MaxRowID
}

// views says what the agent and the relay hold, for failure messages: with
// it a missing, doubled or misordered event tells where it was lost (never
// read from chat.db, stuck in the outbox, refused by the relay).
func views(r *testRelay, j *Journal) string {
	ctx := context.Background()
	agent := fmt.Sprintf("agent: outbox %d", j.OutboxLen())
	if acked, err := j.Acked(ctx); err == nil {
		agent += fmt.Sprintf(", acked up to %d", acked)
	}
	if c, err := j.Cursor(ctx); err != nil || c == nil {
		agent += fmt.Sprintf(", no chat.db cursor (%v)", err)
	} else if info, err := chatdb.DescribeCursor(c); err == nil {
		agent += fmt.Sprintf(", chat.db read up to ROWID %d", info.MaxRowID)
	}
	rel := "relay: "
	db, err := sql.Open("sqlite", "file:"+filepath.Join(r.dir, "relay.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err == nil {
		var seq int64
		var epoch string
		if err = db.QueryRow(`SELECT event_seq, coalesce(journal_epoch, '') FROM agents`).Scan(&seq, &epoch); err == nil {
			rel += fmt.Sprintf("stored sequence %d, journal epoch %q", seq, epoch)
		}
		db.Close()
	}
	if err != nil {
		rel += fmt.Sprintf("relay.db unreadable (%v)", err)
	}
	if as, err := r.Agents(ctx); err == nil && len(as) == 1 {
		rel += fmt.Sprintf(", connected %v, healthy %v", as[0].Connected, as[0].Healthy)
		if d := as[0].LastDisconnect; d != nil {
			rel += fmt.Sprintf(", last disconnect %s (graceful %v: %s)", d.At.Format(time.RFC3339Nano), d.Graceful, d.Reason)
		}
	}
	return agent + "\n" + rel
}

// waitOutbox waits (bounded) until cond holds for the number of events in
// the journal's outbox, looking again at each change.
func waitOutbox(t *testing.T, j *Journal, limit time.Duration, what string, cond func(n int) bool) {
	t.Helper()
	timeout := time.After(limit)
	for {
		changed := j.Changed() // before the look, so a change after it wakes the wait
		if cond(j.OutboxLen()) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%s: not within %v (outbox %d)", what, limit, j.OutboxLen())
		}
	}
}

// waitEvents reads the relay's stored message events until n arrived and
// returns their texts in relay order; more than n is a failure (a double).
// The relay acks an event only once it is stored, so when the agent's
// outbox j is empty every event the agent will ever send is stored: one
// more read then shows any double.
func waitEvents(t *testing.T, r *testRelay, j *Journal, n int, limit time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var texts []string
	var after int64
	for time.Now().Before(deadline) {
		page, err := r.Events(context.Background(), after, 1000, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Events {
			ev, err := opclient.Event(v)
			if err != nil {
				t.Fatal(err)
			}
			if m := ev.GetMessage(); m != nil {
				texts = append(texts, m.GetText())
			}
		}
		after = page.Next
		if len(texts) >= n {
			waitOutbox(t, j, limit, "every event acked", func(n int) bool { return n == 0 })
			page, _ := r.Events(context.Background(), after, 1000, 0)
			for _, v := range page.Events {
				if ev, _ := opclient.Event(v); ev.GetMessage() != nil {
					texts = append(texts, ev.GetMessage().GetText())
				}
			}
			if len(texts) != n {
				t.Fatalf("%d message events, want exactly %d: %q\n%s", len(texts), n, texts, views(r, j))
			}
			return texts
		}
	}
	t.Fatalf("only %d of %d message events arrived within %v: %q\n%s", len(texts), n, limit, texts, views(r, j))
	return nil
}
