package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/relay/opclient"
)

// TestEventsWrittenWhileRelayIsAwayArriveOnceInOrder is the "nothing lost"
// promise end to end: rows written to a real chat.db while the relay is down
// reach the restarted relay, each once, in order.
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

	say := func(i int) {
		if _, err := m.Store.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("msg %03d", i)}); err != nil {
			t.Fatal(err)
		}
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
	waitOutbox(t, a.journal, 10*time.Second, "the 55 new events in the outbox", func(n int) bool { return n >= 55 })
	r = startRelay(t, relayDir, addr)
	defer r.Close()
	got := waitEvents(t, r, a.journal, 60, 20*time.Second)
	for i, text := range got {
		if want := fmt.Sprintf("msg %03d", i); text != want {
			t.Fatalf("event %d is %q, want %q (all: %q)", i, text, want, got)
		}
	}
	cancel()
	<-done
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
				t.Fatalf("%d message events, want exactly %d: %q", len(texts), n, texts)
			}
			return texts
		}
	}
	t.Fatalf("only %d of %d message events arrived: %q", len(texts), n, texts)
	return nil
}
