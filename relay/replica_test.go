package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/pkg/pgtest"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// Two relays in this test binary on one PostgreSQL database, each with
// its own data dir (its own dev CA: the fake agents dial each with its
// CA), stand for two replicas (docs/scaling.md). The process-level faults
// (a replica killed, PostgreSQL restarted) are e2e/replicas'.

// startReplicas starts n relays on one new PostgreSQL database, each
// with opts (and its ReplicaID, r0, r1, ...), and waits until each one
// that listens is listening, so announcements made after it returns are
// heard.
func startReplicas(t *testing.T, n int, opts ...Options) []*Server {
	t.Helper()
	url := pgtest.Database(t)
	out := make([]*Server, n)
	for i := range out {
		var o Options
		if i < len(opts) {
			o = opts[i]
		}
		o.Store, o.ReplicaID = url, fmt.Sprintf("r%d", i)
		out[i] = startRelay(t, "", o)
	}
	for _, srv := range out {
		if srv.fleet == nil {
			t.Fatal("a relay on PostgreSQL has no fleet")
		}
		if !srv.opts.noListen {
			eventually(t, srv.replica+" listening", func() bool { return srv.fleet.listeningErr() == nil })
		}
	}
	return out
}

// healthy makes a answer every health check OK.
func healthy(a *testAgent) *testAgent {
	a.autoHealth.Store(int32(linev1.HealthStatus_HEALTH_STATUS_OK))
	return a
}

// settled waits until ag's new stream on srv has made its first claim
// (the redelivery on connect, which would pick up a command queued
// meanwhile whoever announced it): a typing command submitted to srv
// itself reaches the agent, which finishes it.
func settled(t *testing.T, srv *Server, ag *testAgent) {
	t.Helper()
	id := fmt.Sprintf("settle-%d", time.Now().UnixNano())
	if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: id, Line: ag.lines[0], Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}); err != nil {
		t.Fatal(err)
	}
	if got := ag.nextCommand().GetId(); got != id {
		t.Fatalf("dispatched %q, want %q", got, id)
	}
	ag.succeed(id, "settled")
	waitState(t, srv, id, stateSucceeded)
}

// TestReplicasCommandSubmittedElsewhere: a command submitted to the
// replica that does not hold the agent's stream reaches the agent at once
// (the poll is an hour: only the announcement can have carried it), its
// result is on both replicas, and a call waiting for it there is woken.
func TestReplicasCommandSubmittedElsewhere(t *testing.T) {
	rs := startReplicas(t, 2, Options{ReplicaPoll: time.Hour}, Options{ReplicaPoll: time.Hour})
	a, b := rs[0], rs[1]
	ag := healthy(enrollAgent(t, a, "+15550001"))
	ag.connect()
	settled(t, a, ag)

	wake, release := b.cmdDone.watch("c1")
	defer release()
	if code, body := postCommand(t, b, sendText("c1", "+15550001")); code != http.StatusAccepted {
		t.Fatalf("submit on the other replica: %d %v", code, body)
	}
	if got := ag.nextCommand().GetId(); got != "c1" {
		t.Fatalf("dispatched %q", got)
	}
	ag.succeed("c1", "guid-1")
	select {
	case <-wake.ch:
	case <-time.After(waitFor):
		t.Fatal("a call waiting on the other replica was not woken by the result")
	}
	for _, srv := range rs {
		if v := waitState(t, srv, "c1", stateSucceeded); v.AgentID != ag.id {
			t.Fatalf("%s: %+v", srv.replica, v)
		}
	}
}

// TestReplicasPollIsTheBackstop: with no LISTEN connection anywhere, the
// poll alone carries what announcements would have: a command submitted
// to one replica reaches the agent on the other, its result wakes a call
// waiting on the first, an event stored by the agent's replica ends a
// long poll on the other, and a stream the agent left for the other
// replica ends.
func TestReplicasPollIsTheBackstop(t *testing.T) {
	const poll = 100 * time.Millisecond
	rs := startReplicas(t, 2, Options{ReplicaPoll: poll, noListen: true}, Options{ReplicaPoll: poll, noListen: true})
	a, b := rs[0], rs[1]
	ag := healthy(enrollAgent(t, a, "+15550001"))
	ag.connect()
	settled(t, a, ag)

	wake, release := b.cmdDone.watch("c1")
	defer release()
	if _, err := b.SubmitCommand(context.Background(), &linev1.Command{Id: "c1", Line: "+15550001", Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}); err != nil {
		t.Fatal(err)
	}
	if got := ag.nextCommand().GetId(); got != "c1" {
		t.Fatalf("dispatched %q", got)
	}
	ag.succeed("c1", "guid-1")
	select {
	case <-wake.ch:
	case <-time.After(waitFor):
		t.Fatal("the poll did not wake the call waiting on the other replica")
	}

	// A long poll far longer than the test waits: only a wake-up ends it
	// in time.
	pctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	polled := make(chan EventsPage, 1)
	go func() {
		page, err := b.Events(pctx, 0, 10, maxPollWait)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
		polled <- page
	}()
	time.Sleep(3 * poll) // the long poll is waiting
	ag.event(1, "m1/message/0", "hello")
	if got := ag.nextAck(); got != 1 {
		t.Fatalf("acked %d", got)
	}
	select {
	case page := <-polled:
		if len(page.Events) != 1 || page.Events[0].AgentID != ag.id {
			t.Fatalf("the other replica's long poll returned %+v", page)
		}
	case <-time.After(waitFor):
		t.Fatal("the long poll on the other replica was not woken")
	}

	// The agent connects to the other replica: the poll ends the stream
	// left behind here.
	old := ag.cur
	ag.redial(b)
	ag.connect()
	if err := old.ended(t); status.Code(err) != codes.Aborted {
		t.Fatalf("the older stream ended with %v, want Aborted", err)
	}
}

// TestReplicasEventsInOrderEverywhere: events an agent streams to one
// replica reach a long poll waiting on the other (the poll is an hour:
// the announcement carried it), and both replicas list them in the same
// order with the same sequences.
func TestReplicasEventsInOrderEverywhere(t *testing.T) {
	rs := startReplicas(t, 2, Options{ReplicaPoll: time.Hour}, Options{ReplicaPoll: time.Hour})
	a, b := rs[0], rs[1]
	ag := enrollAgent(t, a, "+15550001")
	ag.connect()

	const n = 50
	pctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	polled := make(chan EventsPage, 1)
	go func() {
		page, err := b.Events(pctx, 0, n, maxPollWait)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
		polled <- page
	}()
	time.Sleep(200 * time.Millisecond)
	ag.event(1, "m1/message/0", "text 1")
	select {
	case page := <-polled:
		if len(page.Events) == 0 {
			t.Fatal("the long poll on the other replica returned nothing")
		}
	case <-time.After(waitFor):
		t.Fatal("the long poll on the other replica was not woken")
	}
	for i := 2; i <= n; i++ {
		ag.event(uint64(i), fmt.Sprintf("m%d/message/0", i), fmt.Sprintf("text %d", i))
	}
	eventually(t, "every event stored", func() bool {
		page, err := b.Events(context.Background(), 0, n+1, 0)
		return err == nil && len(page.Events) == n
	})
	pa, err := a.Events(context.Background(), 0, n+1, 0)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.Events(context.Background(), 0, n+1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		ea, eb := pa.Events[i], pb.Events[i]
		if ea.Seq != eb.Seq || string(ea.Event) != string(eb.Event) || (i > 0 && ea.Seq <= pa.Events[i-1].Seq) {
			t.Fatalf("event %d: %d %s on one replica, %d %s on the other", i, ea.Seq, ea.Event, eb.Seq, eb.Event)
		}
		if want := fmt.Sprintf(`"text %d"`, i+1); !strings.Contains(string(ea.Event), want) {
			t.Fatalf("event %d is %s, want %s: out of order", i, ea.Event, want)
		}
	}
}

// TestReplicasNewestStreamWins: an agent that connects to a second
// replica while its stream on the first is still up (two streams at once,
// as after a half-open connection) keeps the newest: the first replica
// ends its stream as soon as it hears of the second (Aborted), commands go
// to the new one, and both replicas show the agent connected to the
// second.
func TestReplicasNewestStreamWins(t *testing.T) {
	rs := startReplicas(t, 2, Options{ReplicaPoll: time.Hour}, Options{ReplicaPoll: time.Hour})
	a, b := rs[0], rs[1]
	ag := healthy(enrollAgent(t, a, "+15550001"))
	ag.connect()
	old := ag.cur
	ag.redial(b)
	ag.connect()
	if err := old.ended(t); status.Code(err) != codes.Aborted {
		t.Fatalf("the older stream ended with %v, want Aborted", err)
	}
	if _, err := a.SubmitCommand(context.Background(), &linev1.Command{Id: "c1", Line: "+15550001", Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}); err != nil {
		t.Fatal(err)
	}
	if got := ag.nextCommand().GetId(); got != "c1" {
		t.Fatalf("dispatched %q", got)
	}
	for _, srv := range rs {
		eventually(t, srv.replica+" shows the agent on "+b.replica, func() bool {
			v := agentView(t, srv, ag.id)
			return v.Connected && v.Healthy && v.Replica == b.replica && v.LastDisconnect == nil
		})
	}
	// Once the agent leaves, neither shows it connected.
	ag.close()
	for _, srv := range rs {
		eventually(t, srv.replica+" shows the agent gone", func() bool { return !agentView(t, srv, ag.id).Connected })
	}
}

// TestReplicasStaleStreamIsFenced: a replica that never hears that its
// agent connected elsewhere (no LISTEN, no poll within the test) keeps
// the old stream open; what the agent still sends on it is dropped, not
// stored: a result leaves the command as the new stream has it, and the
// stale stream ends (Aborted) at its first write. The new stream gets the
// command again and its result counts.
func TestReplicasStaleStreamIsFenced(t *testing.T) {
	rs := startReplicas(t, 2, Options{ReplicaPoll: time.Hour, noListen: true}, Options{ReplicaPoll: time.Hour})
	a, b := rs[0], rs[1]
	ag := healthy(enrollAgent(t, a, "+15550001"))
	ag.connect()
	if _, err := a.SubmitCommand(context.Background(), &linev1.Command{Id: "c1", Line: "+15550001", Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}); err != nil {
		t.Fatal(err)
	}
	if got := ag.nextCommand().GetId(); got != "c1" {
		t.Fatalf("dispatched %q", got)
	}
	old := ag.cur
	ag.redial(b)
	ag.connect()
	if got := ag.nextCommand().GetId(); got != "c1" {
		t.Fatalf("the new stream redelivered %q, want c1", got)
	}
	select {
	case <-old.done:
		t.Fatal("the stale replica heard of the new stream; this test needs it not to")
	case <-time.After(200 * time.Millisecond):
	}

	// The stale stream's result and event are dropped.
	if err := old.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{
		CommandId: "c1", Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: "stale"}}, FinishedAt: timestamppb.Now(),
	}}}); err != nil {
		t.Fatal(err)
	}
	if err := old.ended(t); status.Code(err) != codes.Aborted {
		t.Fatalf("the stale stream ended with %v, want Aborted", err)
	}
	if v := getCommand(t, b, "c1"); v.State != stateDispatched {
		t.Fatalf("the stale result was stored: %+v", v)
	}
	ag.succeed("c1", "fresh")
	v := waitState(t, a, "c1", stateSucceeded)
	if string(v.Result) == "" || !strings.Contains(string(v.Result), "fresh") {
		t.Fatalf("result %s, want the new stream's", v.Result)
	}
	// The stale replica recorded no disconnect over the live stream.
	if v := agentView(t, b, ag.id); !v.Connected || v.LastDisconnect != nil {
		t.Fatalf("agent view %+v", v)
	}
}

// TestFencedWrites: every write of a stream counts only for the agent's
// current stream epoch: with an older epoch a claim, an update, a result
// and events fail with errFenced and change nothing, and a health report
// or a disconnect changes nothing; with the current one they count. On
// both backends.
func TestFencedWrites(t *testing.T) {
	eachStore(t, func(t *testing.T, open func() *store) {
		st := open()
		ctx := context.Background()
		now := time.Now()
		if _, err := st.createAgent(ctx, "agt_1", "h", "mini", "test", []string{"+15550001"}, nil, "tok", now.Add(time.Hour), now); err != nil {
			t.Fatal(err)
		}
		hello := func() int64 {
			t.Helper()
			out, err := st.recordHello(ctx, "agt_1", helloRecord{lines: []string{"+15550001"}, replica: "r0"}, now)
			if err != nil {
				t.Fatal(err)
			}
			return out.epoch
		}
		stale, current := hello(), hello()
		if stale != 1 || current != 2 {
			t.Fatalf("epochs %d, %d; want 1, 2", stale, current)
		}
		insertTestCommand(t, st, "c1", "+15550001", now)

		var claimed []*commandRow
		claim := func(epoch int64) error {
			return st.tx(ctx, st.fenced(ctx, "agt_1", epoch, st.claimCommandsFn(ctx, "agt_1", []string{lineKey("+15550001")}, nil, false, 10, now, &claimed)))
		}
		if err := claim(stale); !errors.Is(err, errFenced) {
			t.Fatalf("stale claim: %v", err)
		}
		if r, _ := st.command(ctx, "c1"); r.state != stateQueued {
			t.Fatalf("a stale claim dispatched c1: %s", r.state)
		}
		if err := claim(current); err != nil || len(claimed) != 1 {
			t.Fatalf("claim: %v, %d", err, len(claimed))
		}
		var changed bool
		if err := st.tx(ctx, st.fenced(ctx, "agt_1", stale, st.updateCommandFn(ctx, "c1", "agt_1", stateAccepted, nil, "", now, &changed))); !errors.Is(err, errFenced) {
			t.Fatalf("stale update: %v", err)
		}
		var final *commandRow
		finish := func(epoch int64) error {
			return st.tx(ctx, st.fenced(ctx, "agt_1", epoch, st.finishCommandFn(ctx, "c1", "agt_1", stateSucceeded, []byte("x"), "", "", nil, now, &final)))
		}
		if err := finish(stale); !errors.Is(err, errFenced) || final != nil {
			t.Fatalf("stale result: %v, %v", err, final)
		}
		if r, _ := st.command(ctx, "c1"); r.state != stateDispatched {
			t.Fatalf("a stale result changed c1: %s", r.state)
		}
		var (
			stored  uint64
			added   int
			foreign []string
		)
		events := func(epoch int64) error {
			return st.tx(ctx, st.fenced(ctx, "agt_1", epoch, st.storeEventsFn(ctx, "agt_1", []eventIn{{seq: 1, key: "m1/message/0", lineKey: lineKey("+15550001"), bytes: []byte("e")}}, now, &stored, &added, &foreign)))
		}
		if err := events(stale); !errors.Is(err, errFenced) {
			t.Fatalf("stale events: %v", err)
		}
		if rows, _ := st.eventsAfter(ctx, 0, 10); len(rows) != 0 {
			t.Fatalf("a stale stream stored %d events", len(rows))
		}
		if err := st.saveHealth(ctx, "agt_1", stale, []byte("stale"), true); err != nil {
			t.Fatal(err)
		}
		if err := st.recordDisconnect(ctx, "agt_1", stale, now, now, false, "stale"); err != nil {
			t.Fatal(err)
		}
		agents, err := st.listAgents(ctx)
		if err != nil || len(agents) != 1 {
			t.Fatal(err)
		}
		if r := agents[0]; r.lastHealth != nil || r.stream.healthy || r.stream.disconnected || r.stream.replica != "r0" {
			t.Fatalf("a stale stream's health or disconnect was stored: %+v", r.stream)
		}
		if err := finish(current); err != nil || final == nil {
			t.Fatalf("result: %v, %v", err, final)
		}
		if err := events(current); err != nil || added != 1 {
			t.Fatalf("events: %v, %d", err, added)
		}
	})
}

// TestStoreUnreachable: what a PostgreSQL server that is down or ends the
// relay's connection fails with is told from a refusal (bad SQL), so the
// operator API answers 503 only for the first.
func TestStoreUnreachable(t *testing.T) {
	st, _ := postgresStore(t)
	ctx := context.Background()
	_, refused := st.db.ExecContext(ctx, `SELECT * FROM no_such_table`)
	if refused == nil || storeUnreachable(refused) {
		t.Fatalf("bad SQL counted as unreachable: %v", refused)
	}
	conn, err := st.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pid int
	if err := conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	// Ended from outside, as a server shutting down ends it.
	if _, err := st.db.ExecContext(ctx, `SELECT pg_terminate_backend(?)`, pid); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT 1`); err == nil || !storeUnreachable(err) {
		t.Fatalf("a connection the server ended: %v", err)
	}
	if _, err := openStoreAt(t.TempDir(), "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2"); err == nil || !storeUnreachable(err) {
		t.Fatalf("a server that is not there: %v", err)
	}
}

// cutProxy forwards TCP connections to a PostgreSQL server until cut,
// after which it ends those it carries and every new one at once: a
// replica cut off from its store while its agents' streams stay up.
type cutProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	cut   bool                  // guarded by mu
	conns map[net.Conn]struct{} // guarded by mu
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cutOff()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil || !p.track(c, up) {
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(pair[0], pair[1])
				pair[0].Close()
				pair[1].Close()
			}()
		}
	}
}

// track keeps c and up to end them when cut; false once it is cut.
func (p *cutProxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	return true
}

func (p *cutProxy) cutOff() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// TestReplicaCutOffFromItsStore: a replica that cannot reach the store
// for 5 polls in a row ends its agents' streams (the other replicas count
// them gone by then), so an agent goes to a replica that can reach it:
// there its commands, submitted anywhere, run.
func TestReplicaCutOffFromItsStore(t *testing.T) {
	const poll = 100 * time.Millisecond
	url := pgtest.Database(t)
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	p := startCutProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	cut := startRelay(t, "", Options{Store: u.String(), ReplicaID: "cut", ReplicaPoll: poll})
	other := startRelay(t, "", Options{Store: url, ReplicaID: "other", ReplicaPoll: poll})
	ag := healthy(enrollAgent(t, cut, "+15550001"))
	ag.connect()
	settled(t, cut, ag)

	p.cutOff()
	start := time.Now()
	err = ag.ended()
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "store") {
		t.Fatalf("the cut-off replica ended the stream with %v, want Aborted naming the store", err)
	}
	if d := time.Since(start); d > 20*poll+time.Second {
		t.Errorf("the stream ended %s after the cut; want about %d polls", d, replicaDeadAfter)
	}
	ag.redial(other)
	ag.connect()
	if _, err := other.SubmitCommand(context.Background(), &linev1.Command{Id: "c1", Line: "+15550001", Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}); err != nil {
		t.Fatal(err)
	}
	if got := ag.nextCommand().GetId(); got != "c1" {
		t.Fatalf("dispatched %q", got)
	}
}

// TestReplicasDownloadAskedOfTheOtherReplica: an app asks one replica for
// an attachment while the agent's stream, and so its PutAttachment, is on
// the other. The file travels through the store: the app gets it whole,
// header first, and the kept copy is gone afterwards; a file the agent
// puts for a download nobody reads is kept only until it expires.
func TestReplicasDownloadAskedOfTheOtherReplica(t *testing.T) {
	rs := startReplicas(t, 2)
	a, b := rs[0], rs[1]
	ag := healthy(enrollAgent(t, a, apiLine))
	ag.connect()
	settled(t, a, ag)
	tok, _, err := b.CreateAPIToken(context.Background(), []string{apiLine}, false)
	if err != nil {
		t.Fatal(err)
	}
	c := newAPIClient(t, b, tok)
	files := imessagev1.NewAttachmentServiceClient(dial(t, b))

	data := bytes.Repeat([]byte("0123456789abcdef"), 5000)
	got := make(chan downloaded, 1)
	go func() { got <- downloadAll(t, files, c.ctx(""), "AT-1") }()
	cmd := ag.nextCommand()
	if cmd.GetFetchAttachment().GetAttachmentGuid() != "AT-1" {
		t.Fatalf("command %v", cmd)
	}
	if err := ag.putFile(cmd, data, 30000); err != nil {
		t.Fatalf("PutAttachment to the replica holding the stream: %v", err)
	}
	ag.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: "MSG-9"})
	var d downloaded
	select {
	case d = <-got:
	case <-time.After(waitFor):
		t.Fatal("the download asked of the other replica did not end")
	}
	if d.err != nil || !bytes.Equal(d.data, data) || d.chunks != 3 || d.head.GetGuid() != "AT-1" || d.head.GetMimeType() != "image/png" {
		t.Fatalf("download: %v, %d bytes in %d chunks, header %v", d.err, len(d.data), d.chunks, d.head)
	}
	eventually(t, "the kept copy deleted", func() bool { return blobRows(t, a) == 0 })

	// The app gives up before the agent puts the file: the copy is kept,
	// and pruned once it expires.
	ctx, cancel := context.WithCancel(c.ctx(""))
	go func() { got <- downloadAll(t, files, ctx, "AT-2") }()
	cmd = ag.nextCommand()
	cancel()
	<-got
	if err := ag.putFile(cmd, data, 30000); err != nil {
		t.Fatalf("PutAttachment with nobody reading: %v", err)
	}
	if n := blobRows(t, a); n != 4 {
		t.Fatalf("%d parts kept, want the header and 3 chunks", n)
	}
	if n, err := a.store.pruneUploads(context.Background(), time.Now().Add(relayedTTL+time.Second), 10); err != nil || n != 1 || blobRows(t, a) != 0 {
		t.Fatalf("pruned %d (%v), %d parts left", n, err, blobRows(t, a))
	}
}
