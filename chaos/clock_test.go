package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// TestClockJumps moves the Mac's wall clock (the agent's and its simulated
// Messages', through pkg/wallclock in a -tags chaos build) forward and back
// by hours while sends and incoming messages go on, and kills the agent
// right after the clock is set back a day and right after it is moved a
// day forward, so that reconciliation runs on commands that started
// before the jump and whose rows Messages dated after it. It finds their
// rows by chat.db's order, not the wall clock (docs/reliability.md).
// Nothing may be lost, doubled or acknowledged falsely; commands may fail
// honestly (a deadline set by the relay's clock looks past to a clock
// moved forward).
func TestClockJumps(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	n := scale(40, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	offsetFile := filepath.Join(t.TempDir(), "clock-offset")
	st := startWith(ctx, t, localstack.Options{
		AgentArgs: []string{"--sim-reply-delay", "30s"},
		AgentEnv:  []string{"LINE_CHAOS_CLOCK_OFFSET_FILE=" + offsetFile},
	})
	line := st.Agent.Lines[0]
	w := writer(t, st)
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("clock", i, line)
	}
	every := 30 * time.Millisecond
	span := time.Duration(n) * every
	jumps := []string{"2h", "0s", "-2h", "-26h", "0s", "25h", "0s"}
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	kills := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, j := range jumps {
			time.Sleep(span / time.Duration(len(jumps)+1))
			if err := os.WriteFile(offsetFile, []byte(j), 0o600); err != nil {
				t.Error(err)
				return
			}
			if j == "-26h" || j == "25h" {
				// Within a few milliseconds of the jump: commands that
				// started before it are in flight.
				time.Sleep(jitter(rnd, 0, 20*time.Millisecond))
				st.KillAgent()
				kills++
				time.Sleep(jitter(rnd, 0, 300*time.Millisecond))
				if err := st.StartAgent(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	var texts []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		texts = receive(ctx, t, w, peers[2], "clock incoming", n)
	}()
	submitAll(ctx, t, st, cmds, every)
	wg.Wait()
	if err := os.WriteFile(offsetFile, []byte("0s"), 0o600); err != nil {
		t.Fatal(err)
	}
	fin := finals(ctx, st, cmds, 3*time.Minute)
	r := judge(t, cmds, fin, outgoingTexts(ctx, t, st.ChatDB()))
	lost, dup := inboundOnce(ctx, t, st, texts, 3*time.Minute)
	r.lost, r.duplicated = r.lost+lost, r.duplicated+dup
	r.commands += len(texts)
	r.fault, r.runs = "wall clock jumps (±2 h, -26 h, +25 h)", len(jumps)
	r.note = fmt.Sprintf("%d kills right after a jump; sends failed honestly by code: %s", kills, failureCodes(fin))
	record(t, r)
}
