package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// slowStart is the real chat.db tailer, starting late: a Mac where opening
// chat.db takes a while (a big database, a slow disk, a loaded machine).
type slowStart struct {
	Tailer
	delay time.Duration
}

func (s slowStart) Run(ctx context.Context, start []byte, sink Sink) error {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil
	}
	return s.Tailer.Run(ctx, start, sink)
}

// TestFreshAgentConnectsOnlyOnceItsReaderHasStarted: a freshly enrolled
// agent says Hello only once its chat.db reader has fixed where news
// begins, so a message written as soon as the relay sees the agent
// connected is reported, not taken for history (the cause of the
// once-flaky test, docs/reliability.md).
func TestFreshAgentConnectsOnlyOnceItsReaderHasStarted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	m, err := sim.New(ctx, sim.Options{Dir: t.TempDir(), Remote: sim.RemoteOptions{Disabled: true}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	chat, err := m.Store.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	a := enrolledAgent(t, r, t.TempDir(), &countingDriver{}, &Backoff{Base: 50 * time.Millisecond, Cap: 300 * time.Millisecond})
	a.o.Backend.Tailer = slowStart{Tailer: chatdb.NewTailer(chatdb.TailerOptions{Path: m.ChatDBPath(), Logger: testLogger(t)}), delay: 700 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	// Connected, healthy or not: the moment an operator could send, and
	// the moment the relay starts to count on the agent's events.
	if !eventually(10*time.Second, func() bool {
		as, err := r.Agents(context.Background())
		return err == nil && len(as) == 1 && as[0].Connected
	}) {
		t.Fatal("the agent did not connect")
	}
	for i := range 3 {
		if _, err := m.Store.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: fmt.Sprintf("right away %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitEvents(t, r, a.journal, 3, 15*time.Second)
	cancel()
	<-done
}
