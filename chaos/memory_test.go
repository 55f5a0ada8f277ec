package chaos

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/localstack"
)

// rssKB is a process's resident set size from /proc (Linux; the suite runs
// on Linux).
func rssKB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// TestInboundOutageMemoryFlat keeps messages arriving at a steady pace
// while the relay is away for a long time: the agent's outbox fills to its
// bound and chat.db holds the rest, so its memory must not grow with the
// outage. Full figure: a 10-minute outage, RSS at the end within 10% of
// RSS once the outbox is full (after the first 2 minutes). Then every
// message arrives once, in order.
func TestInboundOutageMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	outage := time.Duration(scale(10, 600)) * time.Second
	warm := outage / 5 // the outbox is full by then
	const rate = 20    // messages a second
	ctx, cancel := context.WithTimeout(context.Background(), outage+10*time.Minute)
	defer cancel()
	// An outbox bound the outage fills within its first fifth (the default,
	// 10,000, would take 8 of the 10 minutes at this rate): from then on
	// chat.db is the backlog and the agent's memory must stay where it is.
	maxOutbox := rate * int(outage/time.Second) / 6
	st := startWith(ctx, t, localstack.Options{AgentEnv: []string{"LINE_AGENT_MAX_OUTBOX=" + fmt.Sprint(maxOutbox)}})
	w := writer(t, st)
	c, err := w.EnsureChat(ctx, sim.ChatSpec{Participants: []string{peers[2]}})
	if err != nil {
		t.Fatal(err)
	}
	st.StopRelay()
	start := time.Now()
	var texts []string
	var rssWarm, rssEnd, rssMax int
	var quarter [4]int // RSS at the start of each quarter of the outage
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	for i := 0; time.Since(start) < outage; i++ {
		<-tick.C
		text := fmt.Sprintf("steady %d", i)
		if _, err := w.Insert(ctx, sim.Msg{Chat: c.GUID, Sender: peers[2], Text: text}); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, text)
		if i%rate == 0 {
			kb, err := rssKB(st.AgentPID())
			if err != nil {
				t.Fatal(err)
			}
			if rssWarm == 0 && time.Since(start) >= warm {
				rssWarm = kb
			}
			if q := int(4 * time.Since(start) / outage); q < 4 && quarter[q] == 0 {
				quarter[q] = kb
			}
			rssEnd, rssMax = kb, max(rssMax, kb)
		}
	}
	if err := st.StartRelay(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	lost, dup := inboundOnce(ctx, t, st, texts, 5*time.Minute)
	growth := float64(rssEnd-rssWarm) / float64(rssWarm)
	r := result{fault: "long relay outage, steady incoming (agent memory)", runs: 1, commands: len(texts),
		recover: []time.Duration{time.Since(back)},
		note: fmt.Sprintf("%s outage at %d/s, outbox bound %d; agent RSS %.1f MB after %s, %.1f MB at the end (%+.1f%%), peak %.1f MB; by quarter %.1f, %.1f, %.1f, %.1f MB",
			outage, rate, maxOutbox, float64(rssWarm)/1024, warm, float64(rssEnd)/1024, 100*growth, float64(rssMax)/1024,
			float64(quarter[0])/1024, float64(quarter[1])/1024, float64(quarter[2])/1024, float64(quarter[3])/1024)}
	r.lost, r.duplicated = r.lost+lost, r.duplicated+dup
	record(t, r)
	if limit := 0.10; full && growth > limit {
		t.Errorf("agent RSS grew %.1f%% during the outage; the figure is within %.0f%%", 100*growth, 100*limit)
	}
}
