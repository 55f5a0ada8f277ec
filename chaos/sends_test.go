package chaos

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// TestKillAgentDuringSends kills the agent with SIGKILL at random moments
// while sends stream in, and starts it again each time: whatever step of a
// command the kill lands on (queued, recorded, in the driver, finished but
// not yet durable), no message may be lost, sent twice or acknowledged
// falsely. Full figure: 1,000 sends, 20 kills, in doubt under 1%.
func TestKillAgentDuringSends(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes and kill -9")
	}
	n, kills := scale(60, 1000), scale(2, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	st := startStack(ctx, t, "--sim-reply-delay", "30s")
	line := st.Agent.Lines[0]
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("kill9", i, line)
	}
	recov := killWhileSending(ctx, t, st, cmds, kills, 300*time.Millisecond, st.KillAgent, st.StartAgent)
	fin := finals(ctx, st, cmds, 3*time.Minute)
	r := judge(t, cmds, fin, outgoingTexts(ctx, t, st.ChatDB()))
	r.fault, r.runs, r.recover = "agent kill -9 during sends", kills, recov
	r.note = "recover: kill to healthy again"
	record(t, r)
	if full && r.inDoubt*100 >= r.commands {
		t.Errorf("in doubt %d of %d: the figure is under 1%%", r.inDoubt, r.commands)
	}
}

// TestKillRelayDuringSends kills the relay (SIGKILL) while sends stream in
// and starts it again on the same data: commands it had stored are
// dispatched again, the agent answers a redelivered id from its journal,
// and results the relay missed arrive when the agent reconnects.
func TestKillRelayDuringSends(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes and kill -9")
	}
	n, kills := scale(40, 300), scale(2, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	st := startStack(ctx, t, "--sim-reply-delay", "30s")
	line := st.Agent.Lines[0]
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("relaykill", i, line)
	}
	recov := killWhileSending(ctx, t, st, cmds, kills, 500*time.Millisecond, st.KillRelay, st.StartRelay)
	fin := finals(ctx, st, cmds, 3*time.Minute)
	r := judge(t, cmds, fin, outgoingTexts(ctx, t, st.ChatDB()))
	r.fault, r.runs, r.recover = "relay kill -9 during sends", kills, recov
	r.note = "recover: kill to serving again"
	record(t, r)
}

// killWhileSending submits cmds one every 20 ms and meanwhile kills a
// process kills times at random moments spread over the run, starting it
// again after a pause of up to down; it returns each kill's time from the
// kill to the process serving again.
func killWhileSending(ctx context.Context, t *testing.T, st *localstack.Stack, cmds []*linev1.Command, kills int, down time.Duration,
	kill func(), start func(context.Context) error) []time.Duration {
	t.Helper()
	every := 20 * time.Millisecond
	span := time.Duration(len(cmds)) * every
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var recov []time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := range kills {
			time.Sleep(jitter(rnd, span/time.Duration(2*kills), span/time.Duration(kills)))
			at := time.Now()
			kill()
			time.Sleep(jitter(rnd, 0, down))
			if err := start(ctx); err != nil {
				t.Errorf("start again after kill %d: %v", k, err)
				return
			}
			recov = append(recov, time.Since(at))
		}
	}()
	submitAll(ctx, t, st, cmds, every)
	wg.Wait()
	return recov
}
