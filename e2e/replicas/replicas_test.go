package replicas

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

// reconnectBound is how soon after its replica is killed the agent must
// be connected to another: its first reconnect comes within the backoff's
// 1 s base (full jitter) and tries the replicas in order, the dead one
// refusing at once; the rest is the Hello and the first health report.
const reconnectBound = 15 * time.Second

// waitHolder waits (within limit) until via shows the agent connected and
// healthy on want, and returns how long that took.
func (f *fleet) waitHolder(ctx context.Context, via, want *replica, limit time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	deadline := start.Add(limit)
	for {
		as, err := via.op.Agents(ctx)
		if err == nil {
			for _, a := range as {
				if a.ID == f.agentID && a.Connected && a.Healthy && strings.HasPrefix(a.Replica, want.name+".") {
					return time.Since(start)
				}
			}
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("the agent is not on %s within %s as %s sees it (%v)\n%s", want.name, limit, via.name, err, f.tails())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCommandsAndEventsAcrossReplicas: with the agent on the first
// replica, commands submitted through the second run once each and show
// the same final state on both, and messages arriving on the Mac reach
// the second replica's event log once each, in order, with the sequences
// the first one lists.
func TestCommandsAndEventsAcrossReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	f := startFleet(ctx, t, 2)
	a, b := f.replicas[0], f.replicas[1]
	f.waitHolder(ctx, b, a, 30*time.Second)

	n := scale(10, 100)
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("across", i, f.line)
		submit(ctx, t, b, cmds[i], 30*time.Second)
	}
	fin := finals(ctx, b, cmds, 2*time.Minute)
	if ok := judgeOnce(t, cmds, fin, f.outgoing(ctx)); ok != n {
		t.Errorf("%d of %d commands succeeded", ok, n)
	}
	onA := finals(ctx, a, cmds, 30*time.Second)
	for _, c := range cmds {
		if va, vb := onA[c.Id], fin[c.Id]; va == nil || vb == nil || va.State != vb.State || va.AgentID != vb.AgentID {
			t.Errorf("%s: %+v on %s, %+v on %s", c.Id, va, a.name, vb, b.name)
		}
	}

	texts := receive(ctx, t, f.messages(), "across", scale(20, 200), 10*time.Millisecond)
	got := storedInbound(ctx, t, b, texts, time.Minute)
	onceInOrder(t, b.name, texts, got)
	f.sameLog(ctx, t, texts, got)
}

// TestReplicaKilledWithCommandsInFlight: commands stream in through one
// replica and messages arrive on the Mac while the replica holding the
// agent's stream is killed (SIGKILL, with dispatched commands and
// unacknowledged events in flight); the agent is on the other replica
// within the backoff bound, every command ends once (chat.db shows each
// text at most once, and a success only with its row), and every message
// is stored once, in order. The full run kills whichever replica holds
// the agent several times, starting the killed one again each time.
func TestReplicaKilledWithCommandsInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes and kill -9")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	f := startFleet(ctx, t, 2)
	kills := scale(1, 4)
	n := scale(40, 400)
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("killed", i, f.line)
	}
	holder := f.replicas[0]
	f.waitHolder(ctx, f.replicas[1], holder, 30*time.Second)

	var submitted atomic.Int64
	var wg sync.WaitGroup
	var texts []string
	wg.Add(2)
	go func() {
		defer wg.Done()
		for _, c := range cmds {
			// Through whichever replica is up (the one not holding the
			// agent when a kill comes): a retry with the same id is never
			// a second command.
			for attempt := 0; ; attempt++ {
				r := f.replicas[attempt%len(f.replicas)]
				if _, _, err := r.op.Submit(ctx, c); err == nil {
					break
				}
				if attempt > 600 || ctx.Err() != nil {
					t.Errorf("submit %s: gave up", c.Id)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			submitted.Add(1)
			time.Sleep(30 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		texts = receive(ctx, t, f.messages(), "killed", scale(40, 400), 30*time.Millisecond)
	}()
	var recovered []time.Duration
	for k := range kills {
		for submitted.Load() < int64((k+1)*n/(kills+1)) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		other := f.replicas[0]
		if holder == other {
			other = f.replicas[1]
		}
		holder.child.Kill()
		holder.down = true
		took := f.waitHolder(ctx, other, other, reconnectBound)
		recovered = append(recovered, took)
		if k < kills-1 {
			f.startReplica(ctx, holder)
		}
		holder = other
	}
	wg.Wait()
	t.Logf("%d kills: the agent was on the other replica %v after each", kills, recovered)

	fin := finals(ctx, holder, cmds, 3*time.Minute)
	ok := judgeOnce(t, cmds, fin, f.outgoing(ctx))
	t.Logf("%d of %d commands succeeded, the rest failed honestly (%s)", ok, n, failures(fin))
	got := storedInbound(ctx, t, holder, texts, 2*time.Minute)
	onceInOrder(t, holder.name, texts, got)
}

// failures counts the failed commands of fin by error code.
func failures(fin map[string]*relay.CommandView) string {
	codes := map[string]int{}
	for _, v := range fin {
		if v.Error != nil {
			codes[v.Error.Code]++
		}
	}
	if len(codes) == 0 {
		return "none failed"
	}
	return fmt.Sprint(codes)
}

// TestPostgresRestarted: PostgreSQL restarts under two replicas while
// messages arrive on the Mac. Meanwhile every operator API call that
// needs the store, on either replica, answers 503 UNAVAILABLE, never a
// success, and a command submitted then is not stored; the platform API
// (what spectrum-ts calls) answers UNAVAILABLE with the error code
// serviceUnavailable: the token cannot be checked, which comes before
// anything is stored, so x-retryable is true (a store failure after that
// point is never retryable: relay/api_errors.go); once the server is
// back the replicas reconnect by themselves: commands through either run
// once, and the messages that arrived during the outage are stored once,
// in order, with the same sequences on both.
func TestPostgresRestarted(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes and a PostgreSQL restart")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	f := startFleet(ctx, t, 2)
	a, b := f.replicas[0], f.replicas[1]
	before := sendText("before", 0, f.line)
	submit(ctx, t, b, before, 30*time.Second)
	if fin := finals(ctx, a, []*linev1.Command{before}, time.Minute); fin[before.Id] == nil || fin[before.Id].State != "succeeded" {
		t.Fatalf("before the restart: %+v", fin[before.Id])
	}

	apiTok, err := f.relayCommand(ctx, "api-token", "create", "--store", f.store, "--line", f.line)
	if err != nil {
		t.Fatal(err)
	}
	apis := make([]*platformAPI, len(f.replicas))
	for i, r := range f.replicas {
		apis[i] = f.platformAPI(t, r, strings.TrimSpace(apiTok))
	}
	chat := "iMessage;-;" + peers[0]
	if out := apis[0].send(ctx, "platform-before", chat); out != "OK" {
		t.Fatalf("a platform API send before the restart: %s", out)
	}

	outage := time.Duration(scale(3, 15)) * time.Second
	w := f.messages()
	var texts []string
	answers := map[string]int{}
	var tried []string
	err = f.pg.Restart(ctx, func() {
		down := time.Now()
		texts = receive(ctx, t, w, "outage", scale(10, 100), 20*time.Millisecond)
		for i := 0; time.Since(down) < outage; i++ {
			for _, r := range f.replicas {
				c := sendText("outage-"+r.name, i, f.line)
				tried = append(tried, c.Id)
				answers["POST "+statusOf(submitOnce(ctx, r, c))]++
				_, err := r.op.Command(ctx, before.Id)
				answers["GET "+statusOf(err)]++
				_, err = r.op.Events(ctx, 0, 0)
				answers["events "+statusOf(err)]++
			}
			for k, p := range apis {
				answers["SendTextMessage "+p.send(ctx, fmt.Sprintf("platform-outage-%d-%d", k, i), chat)]++
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("answers while PostgreSQL was down: %v", answers)
	for k, n := range answers {
		want := " 503 UNAVAILABLE"
		if strings.HasPrefix(k, "SendTextMessage ") {
			want = " " + platformUnavailable
		}
		if !strings.HasSuffix(k, want) {
			t.Errorf("%d answers %q while the store was down; every one must be%s", n, k, want)
		}
	}
	if out := apis[1].send(ctx, "platform-after", chat); out != "OK" {
		t.Errorf("a platform API send after the restart: %s", out)
	}

	// Back: both replicas serve again, by themselves.
	n := scale(10, 100)
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("after", i, f.line)
		submit(ctx, t, f.replicas[i%2], cmds[i], 90*time.Second)
	}
	fin := finals(ctx, b, cmds, 3*time.Minute)
	if ok := judgeOnce(t, cmds, fin, f.outgoing(ctx)); ok != n {
		t.Errorf("%d of %d commands after the restart succeeded", ok, n)
	}
	for _, id := range tried {
		for _, r := range f.replicas {
			var ae *opclient.APIError
			if _, err := r.op.Command(ctx, id); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
				t.Errorf("%s, refused while the store was down, reads back from %s as %v; want 404", id, r.name, err)
			}
		}
	}
	got := storedInbound(ctx, t, b, texts, 2*time.Minute)
	onceInOrder(t, b.name, texts, got)
	f.sameLog(ctx, t, texts, got)
}

// submitOnce submits c once and returns the error (nil on a 2xx).
func submitOnce(ctx context.Context, r *replica, c *linev1.Command) error {
	_, _, err := r.op.Submit(ctx, c)
	return err
}

// statusOf names an operator API outcome: "2xx" for a success, else the
// status and code, or the transport error.
func statusOf(err error) string {
	var ae *opclient.APIError
	switch {
	case err == nil:
		return "2xx"
	case errors.As(err, &ae):
		return fmt.Sprintf("%d %s", ae.Status, ae.Code)
	}
	return "transport error"
}

// TestTwoReplicasRaceForOneAgent: two streams of one agent open at the
// same moment, one to each replica (a client standing in for the agent,
// over TLS with the shared CA). The newest wins: exactly one stays up, the
// other ends with Aborted; a command queued before goes to the winner,
// and a result the loser still sends for it is dropped: the command ends
// with the winner's result, on both replicas.
func TestTwoReplicasRaceForOneAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := startFleet(ctx, t, 2)
	a, b := f.replicas[0], f.replicas[1]
	const line = "+15550009999"
	ag := enrollRaw(ctx, t, f, a, line)
	c := &linev1.Command{Id: "raced", Line: line, Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}
	submit(ctx, t, a, c, 30*time.Second)

	streams := make([]*rawStream, 2)
	var wg sync.WaitGroup
	for i, r := range []*replica{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			streams[i] = ag.connect(ctx, t, r)
		}()
	}
	wg.Wait()
	for _, s := range streams {
		if s == nil {
			t.FailNow()
		}
	}
	var winner, loser *rawStream
	deadline := time.Now().Add(10 * time.Second)
	for winner == nil && time.Now().Before(deadline) {
		for i, s := range streams {
			if s.ended() {
				loser, winner = s, streams[1-i]
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if winner == nil {
		t.Fatal("both streams of one agent are still up 10 s after they opened")
	}
	if err := loser.err(); !strings.Contains(err.Error(), "Aborted") {
		t.Fatalf("the losing stream ended with %v, want Aborted", err)
	}
	if winner.ended() {
		t.Fatalf("the winning stream ended too: %v", winner.err())
	}
	// The loser's result, had it kept the command, is dropped; the
	// winner has it.
	loser.result(c.Id, "stale")
	got := winner.command(t, 10*time.Second)
	if got != c.Id {
		t.Fatalf("the winner got %q", got)
	}
	winner.result(c.Id, "fresh")
	for _, r := range f.replicas {
		v, err := r.op.Final(ctx, c.Id, nil)
		if err != nil || v.State != "succeeded" || !strings.Contains(string(v.Result), "fresh") {
			t.Fatalf("%s shows %+v, %v; want the winner's result", r.name, v, err)
		}
	}
	t.Logf("the winner was the stream to %s", winner.via.name)
}
