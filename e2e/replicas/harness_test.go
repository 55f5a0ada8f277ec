package replicas

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	_ "modernc.org/sqlite" // chat.db, read as the tests' Messages

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/capool"
	"github.com/line-agent/line-agent/pkg/localstack"
	"github.com/line-agent/line-agent/pkg/pgtest"
	"github.com/line-agent/line-agent/pkg/typedstream"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

// full is set by LINE_CHAOS=full: more commands, messages and kills than
// the short run make test does.
var full = os.Getenv("LINE_CHAOS") == "full"

// scale picks the short or the full figure.
func scale(short, long int) int {
	if full {
		return long
	}
	return short
}

// bins are built once for the package's tests.
var bins = &localstack.Binaries{}

// cluster is the package's own PostgreSQL (not pgtest's shared one: a
// test here restarts it), started by the first test that needs it.
var cluster struct {
	once sync.Once
	c    *pgtest.Cluster
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.c != nil {
		if err := cluster.c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop PostgreSQL: %v\n", err)
		}
	}
	bins.Remove()
	os.Exit(code)
}

// postgres is the package's cluster; without PostgreSQL the test skips
// (or fails when CI is set), as pgtest's own helpers do.
func postgres(t *testing.T) *pgtest.Cluster {
	t.Helper()
	cluster.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cluster.c, cluster.err = pgtest.Start(ctx)
	})
	switch {
	case errors.Is(cluster.err, pgtest.ErrNoPostgres) && os.Getenv("CI") == "":
		t.Skipf("%s: skipped, %v", t.Name(), cluster.err)
	case cluster.err != nil:
		t.Fatal(cluster.err)
	}
	return cluster.c
}

// replica is one running line-relay serve.
type replica struct {
	name, dir  string
	grpc, http string
	op         *opclient.Client
	child      *localstack.Child
	down       bool // killed and not started again
}

// fleet is the replicas, the agent and the store they share.
type fleet struct {
	t        *testing.T
	dir      string
	pg       *pgtest.Cluster
	store    string
	relayBin string
	agentBin string
	replicas []*replica
	agentDir string
	agent    *localstack.Child
	// line is the agent's line; agentID its id.
	line, agentID string
}

// startFleet starts n replicas on a new database of the package's
// cluster, the first one's dev CA copied into the others' data dirs (so
// one ca.pem is trusted for all), enrolls an agent with the first and
// runs it dialing them in order, and returns once a replica sees it
// connected and healthy. Everything is stopped when the test ends, and the
// logs are shown when it failed.
func startFleet(ctx context.Context, t *testing.T, n int) *fleet {
	t.Helper()
	pg := postgres(t)
	relayBin, agentBin, err := bins.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	db, err := pg.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{t: t, dir: t.TempDir(), pg: pg, store: pg.URL(db), relayBin: relayBin, agentBin: agentBin}
	f.agentDir = filepath.Join(f.dir, "agent")
	t.Cleanup(func() {
		f.agent.Stop()
		for _, r := range f.replicas {
			r.child.Stop()
		}
		if t.Failed() {
			t.Logf("%s", f.tails())
		}
	})
	for i := range n {
		r := &replica{name: fmt.Sprintf("r%d", i), dir: filepath.Join(f.dir, fmt.Sprintf("relay%d", i))}
		if r.grpc, err = localstack.FreeAddr(); err == nil {
			r.http, err = localstack.FreeAddr()
		}
		if err != nil {
			t.Fatal(err)
		}
		r.op = opclient.New(r.http)
		if i > 0 {
			if err := os.MkdirAll(r.dir, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"ca.pem", "ca-key.pem"} {
				b, err := os.ReadFile(filepath.Join(f.replicas[0].dir, name))
				if err == nil {
					err = os.WriteFile(filepath.Join(r.dir, name), b, 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		f.replicas = append(f.replicas, r)
		f.startReplica(ctx, r)
	}
	tok, err := f.relayCommand(ctx, "token", "create", "--store", f.store)
	if err != nil {
		t.Fatal(err)
	}
	enroll := exec.CommandContext(ctx, agentBin, "enroll", "--relay", f.replicas[0].grpc, "--ca", filepath.Join(f.replicas[0].dir, "ca.pem"), "--token-file", "-", "--data", f.agentDir)
	enroll.Stdin = strings.NewReader(tok)
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("line-agent enroll: %v: %s", err, out)
	}
	addrs := make([]string, n)
	for i, r := range f.replicas {
		addrs[i] = r.grpc
	}
	// The sim's person does not answer within a test: every incoming
	// message is one the test wrote.
	if f.agent, err = localstack.StartChild(f.log("agent"), nil, agentBin, "run", "--data", f.agentDir, "--driver", "sim",
		"--relay", strings.Join(addrs, ","), "--sim-reply-delay", "1h"); err != nil {
		t.Fatal(err)
	}
	v := f.waitAgent(ctx, f.replicas[0], 60*time.Second)
	f.agentID, f.line = v.ID, v.Lines[0]
	return f
}

func (f *fleet) log(name string) string { return filepath.Join(f.dir, name+".log") }

// startReplica starts (or starts again) r and waits for its operator API.
func (f *fleet) startReplica(ctx context.Context, r *replica) {
	f.t.Helper()
	c, err := localstack.StartChild(f.log(r.name), nil, f.relayBin, "serve", "--data", r.dir, "--store", f.store,
		"--grpc-addr", r.grpc, "--http-addr", r.http, "--metrics-addr", "", "--replica-id", r.name, "--log-level", "debug")
	if err != nil {
		f.t.Fatal(err)
	}
	r.child, r.down = c, false
	if err := localstack.WaitFor(ctx, 30*time.Second, func() error { _, err := r.op.Agents(ctx); return err }); err != nil {
		f.t.Fatalf("replica %s did not come up: %v\n%s", r.name, err, f.tails())
	}
}

// relayCommand runs a line-relay subcommand and returns its output.
func (f *fleet) relayCommand(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, f.relayBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("line-relay %s: %w: %s", args[0], err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// waitAgent waits (within limit) until via's operator API shows the agent
// connected and healthy, and returns that view (its Replica says where).
func (f *fleet) waitAgent(ctx context.Context, via *replica, limit time.Duration) relay.AgentView {
	f.t.Helper()
	var got relay.AgentView
	if err := localstack.WaitFor(ctx, limit, func() error {
		as, err := via.op.Agents(ctx)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.Connected && a.Healthy {
				got = a
				return nil
			}
		}
		return errors.New("no healthy agent yet")
	}); err != nil {
		f.t.Fatalf("agent not connected and healthy as %s sees it: %v\n%s", via.name, err, f.tails())
	}
	return got
}

func (f *fleet) tails() string {
	var b strings.Builder
	names := []string{"agent"}
	for _, r := range f.replicas {
		names = append(names, r.name)
	}
	for _, name := range names {
		data, err := os.ReadFile(f.log(name))
		if err != nil {
			continue
		}
		if len(data) > 24<<10 {
			data = data[len(data)-24<<10:]
		}
		fmt.Fprintf(&b, "--- %s.log (tail)\n%s\n", name, data)
	}
	return b.String()
}

// ---- commands ---------------------------------------------------------------

// peers are the simulated people the sends go to.
var peers = []string{"+15557654301", "+15557654302", "+15557654303"}

// sendText is command i of a run: a unique text, so chat.db shows exactly
// which commands reached Messages and how often.
func sendText(prefix string, i int, line string) *linev1.Command {
	return &linev1.Command{
		Id:       fmt.Sprintf("%s-%d", prefix, i),
		Line:     line,
		Target:   &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{peers[i%len(peers)]}}},
		Deadline: timestamppb.New(time.Now().Add(2 * time.Minute)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: fmt.Sprintf("%s message %d", prefix, i)}},
	}
}

// submit submits c through r, retrying while r cannot take it (it may be
// down, or its store restarting); the same id is never a second command.
func submit(ctx context.Context, t *testing.T, r *replica, c *linev1.Command, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		_, _, err := r.op.Submit(ctx, c)
		if err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("submit %s through %s: %v", c.Id, r.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// finals waits (within limit) for every command's final state as r shows
// it; a command still not final is missing from the map.
func finals(ctx context.Context, r *replica, cmds []*linev1.Command, limit time.Duration) map[string]*relay.CommandView {
	out := map[string]*relay.CommandView{}
	deadline := time.Now().Add(limit)
	for len(out) < len(cmds) && time.Now().Before(deadline) {
		for _, c := range cmds {
			if out[c.Id] != nil {
				continue
			}
			if v, err := r.op.Command(ctx, c.Id); err == nil && (v.State == "succeeded" || v.State == "failed") {
				out[c.Id] = v
			}
		}
		if len(out) < len(cmds) {
			time.Sleep(200 * time.Millisecond)
		}
	}
	return out
}

// judgeOnce fails t for a command without a final state, in chat.db more
// than once, succeeded without its row or failed with it (IN_DOUBT
// aside, which is honest). It returns how many succeeded.
func judgeOnce(t *testing.T, cmds []*linev1.Command, fin map[string]*relay.CommandView, rows map[string]int) (succeeded int) {
	t.Helper()
	for _, c := range cmds {
		n, v := rows[c.GetSendText().GetText()], fin[c.Id]
		switch {
		case n > 1:
			t.Errorf("%s is in chat.db %d times", c.Id, n)
		case v == nil:
			t.Errorf("%s has no final result", c.Id)
		case v.State == "succeeded" && n == 0:
			t.Errorf("%s succeeded but chat.db has no row", c.Id)
		case v.State == "succeeded":
			succeeded++
		case v.Error != nil && v.Error.Code == "IN_DOUBT":
		case n > 0:
			t.Errorf("%s failed (%+v) but chat.db has its row", c.Id, v.Error)
		}
	}
	return succeeded
}

// ---- chat.db ------------------------------------------------------------------

func (f *fleet) chatDB() string { return filepath.Join(f.agentDir, "sim", "chat.db") }

// outgoing counts chat.db's outgoing message rows by text.
func (f *fleet) outgoing(ctx context.Context) map[string]int {
	f.t.Helper()
	db, err := sql.Open("sqlite", "file:"+f.chatDB()+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		f.t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT text, attributedBody FROM message WHERE is_from_me = 1 AND associated_message_type = 0`)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	n := map[string]int{}
	for rows.Next() {
		var text sql.NullString
		var body []byte
		if err := rows.Scan(&text, &body); err != nil {
			f.t.Fatal(err)
		}
		if !text.Valid {
			if as, err := typedstream.Decode(body); err == nil {
				text.String = as.Text
			}
		}
		n[text.String]++
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return n
}

// messages opens the simulated chat.db beside the agent as a second
// writer: the test plays Messages receiving from the network.
func (f *fleet) messages() *sim.Store {
	f.t.Helper()
	w, err := sim.Create(f.chatDB(), sim.WithLine(f.line))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { w.Close() })
	return w
}

// receive writes incoming messages from peer with texts prefix 0 .. n-1,
// one every pause.
func receive(ctx context.Context, t *testing.T, w *sim.Store, prefix string, n int, pause time.Duration) []string {
	t.Helper()
	c, err := w.EnsureChat(ctx, sim.ChatSpec{Participants: []string{peers[0]}})
	if err != nil {
		t.Error(err)
		return nil
	}
	texts := make([]string, n)
	for i := range n {
		texts[i] = fmt.Sprintf("%s %d", prefix, i)
		if _, err := w.Insert(ctx, sim.Msg{Chat: c.GUID, Sender: peers[0], Text: texts[i]}); err != nil {
			t.Error(err)
			return texts[:i]
		}
		time.Sleep(pause)
	}
	return texts
}

// inbound is one incoming message as a replica's event log has it.
type inbound struct {
	seq  int64
	text string
}

// storedInbound reads r's event log (within limit) until it holds every
// one of texts, and returns the incoming messages among them in log order,
// repeats included.
func storedInbound(ctx context.Context, t *testing.T, r *replica, texts []string, limit time.Duration) []inbound {
	t.Helper()
	want := map[string]bool{}
	for _, s := range texts {
		want[s] = true
	}
	var out []inbound
	seen := map[string]bool{}
	var after int64
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && len(seen) < len(want) {
		page, err := r.op.Events(ctx, after, time.Second)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, v := range page.Events {
			e, err := opclient.Event(v)
			if err != nil {
				t.Fatal(err)
			}
			if m := e.GetMessage(); m != nil && !m.GetFromMe() && want[m.GetText()] {
				out = append(out, inbound{seq: v.Seq, text: m.GetText()})
				seen[m.GetText()] = true
			}
		}
		after = max(after, page.Next)
	}
	return out
}

// onceInOrder fails t unless got is texts, each once, in the order
// written.
func onceInOrder(t *testing.T, where string, texts []string, got []inbound) {
	t.Helper()
	if len(got) != len(texts) {
		t.Errorf("%s: %d incoming messages stored, want %d (each once)", where, len(got), len(texts))
	}
	for i := range min(len(got), len(texts)) {
		if got[i].text != texts[i] {
			t.Errorf("%s: message %d is %q, want %q: lost, doubled or out of order", where, i, got[i].text, texts[i])
			return
		}
	}
}

// sameLog fails t unless every replica lists got with the same
// sequences.
func (f *fleet) sameLog(ctx context.Context, t *testing.T, texts []string, got []inbound) {
	t.Helper()
	for _, r := range f.replicas {
		if r.down {
			continue
		}
		other := storedInbound(ctx, t, r, texts, 30*time.Second)
		if fmt.Sprint(other) != fmt.Sprint(got) {
			t.Errorf("%s lists the messages as %v; another replica as %v", r.name, other, got)
		}
	}
}

// platformAPI is one replica's platform API (photon.imessage.v1 on its
// gRPC address, over TLS with the shared CA), called as spectrum-ts calls
// it.
type platformAPI struct {
	msgs  imessagev1.MessageServiceClient
	token string
}

func (f *fleet) platformAPI(t *testing.T, r *replica, token string) *platformAPI {
	t.Helper()
	pool, err := capool.Load(filepath.Join(f.replicas[0].dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+r.grpc, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &platformAPI{msgs: imessagev1.NewMessageServiceClient(cc), token: token}
}

// platformUnavailable is how send names the answer a platform API call
// must get while the store cannot be reached.
const platformUnavailable = "Unavailable serviceUnavailable retryable=true"

// send sends text to chat with key as its idempotency key and names the
// outcome: "OK", or the gRPC code with the error-code and x-retryable
// trailers the SDK reads.
func (p *platformAPI) send(ctx context.Context, key, chat string) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.token, "x-idempotency-key", key)
	var trailer metadata.MD
	_, err := p.msgs.SendTextMessage(ctx, &imessagev1.SendTextMessageRequest{ChatGuid: chat, Text: key}, grpc.Trailer(&trailer))
	if err == nil {
		return "OK"
	}
	first := func(k string) string {
		if v := trailer.Get(k); len(v) > 0 {
			return v[0]
		}
		return "-"
	}
	return fmt.Sprintf("%s %s retryable=%s", status.Code(err), first("error-code"), first("x-retryable"))
}
