package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/localstack"
	"github.com/line-agent/line-agent/relay/opclient"
)

// writer opens the simulated chat.db beside the running agent as a second
// writer: the harness plays Messages receiving messages from the network.
func writer(t *testing.T, st *localstack.Stack) *sim.Store {
	t.Helper()
	w, err := sim.Create(st.ChatDB(), sim.WithLine(st.Agent.Lines[0]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// receive writes n incoming messages from peer, numbered from 0, as fast
// as chat.db takes them.
func receive(ctx context.Context, t *testing.T, w *sim.Store, peer, prefix string, n int) []string {
	t.Helper()
	c, err := w.EnsureChat(ctx, sim.ChatSpec{Participants: []string{peer}})
	if err != nil {
		t.Fatal(err)
	}
	texts := make([]string, n)
	for i := range n {
		texts[i] = fmt.Sprintf("%s %d", prefix, i)
		if _, err := w.Insert(ctx, sim.Msg{Chat: c.GUID, Sender: peer, Text: texts[i]}); err != nil {
			t.Fatal(err)
		}
	}
	return texts
}

// storedInbound waits (within limit) until the relay holds an incoming
// message event for every text, and returns how many times each was
// stored and whether they were stored in the order written.
func storedInbound(ctx context.Context, t *testing.T, st *localstack.Stack, texts []string, limit time.Duration) (count map[string]int, inOrder bool) {
	t.Helper()
	want := map[string]int{}
	for i, s := range texts {
		want[s] = i
	}
	count = map[string]int{}
	inOrder, last := true, -1
	var after int64
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && len(count) < len(texts) {
		page, err := st.Operator.Events(ctx, after, time.Second)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, v := range page.Events {
			e, err := opclient.Event(v)
			if err != nil {
				t.Fatal(err)
			}
			m := e.GetMessage()
			i, ok := want[m.GetText()]
			if m == nil || m.GetFromMe() || !ok {
				continue
			}
			count[m.GetText()]++
			if i < last {
				inOrder = false
			}
			last = max(last, i)
		}
		after = max(after, page.Next)
	}
	return count, inOrder
}

// inboundOnce waits for texts at the relay (storedInbound) and returns how
// many never arrived and how many arrived more than once; an order other
// than the one written fails t.
func inboundOnce(ctx context.Context, t *testing.T, st *localstack.Stack, texts []string, limit time.Duration) (lost, duplicated int) {
	t.Helper()
	count, inOrder := storedInbound(ctx, t, st, texts, limit)
	for _, s := range texts {
		switch c := count[s]; {
		case c == 0:
			lost++
		case c > 1:
			duplicated++
		}
	}
	if !inOrder {
		t.Error("incoming messages were stored out of order")
	}
	return lost, duplicated
}

// TestInboundDuringRelayOutage writes incoming messages while the relay is
// down: the agent keeps them (its outbox, then chat.db itself once the
// outbox is full) and delivers every one once, in order, when the relay is
// back. Full figure: 10,000 messages during a 60 s outage.
func TestInboundDuringRelayOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	n, outage := scale(300, 10000), time.Duration(scale(3, 60))*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	st := startStack(ctx, t)
	w := writer(t, st)
	st.StopRelay()
	down := time.Now()
	texts := receive(ctx, t, w, peers[0], "outage", n)
	if left := outage - time.Since(down); left > 0 {
		time.Sleep(left)
	}
	if err := st.StartRelay(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	lost, dup := inboundOnce(ctx, t, st, texts, 5*time.Minute)
	r := result{fault: "relay down while messages arrive", runs: 1, commands: n,
		recover: []time.Duration{time.Since(back)}, note: fmt.Sprintf("%s outage; recover: relay back to the last message stored", outage)}
	r.lost, r.duplicated = r.lost+lost, r.duplicated+dup
	record(t, r)
}
