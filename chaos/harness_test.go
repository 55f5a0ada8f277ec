package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/pkg/localstack"
	"github.com/line-agent/line-agent/pkg/typedstream"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// full is set by `make chaos`: the figures instead of the short run
// make test does.
var full = os.Getenv("LINE_CHAOS") == "full"

// scale picks the short or the full figure.
func scale(short, long int) int {
	if full {
		return long
	}
	return short
}

// ---- the table ---------------------------------------------------------------

// result is one row of the table: one fault, summed over its runs.
type result struct {
	fault                               string
	runs, commands                      int
	lost, duplicated, falseAck, inDoubt int
	recover                             []time.Duration
	note                                string
}

var (
	resultsMu sync.Mutex
	results   []result
)

// record adds r to the table and fails t on anything lost, doubled or
// falsely acknowledged.
func record(t *testing.T, r result) {
	t.Helper()
	resultsMu.Lock()
	results = append(results, r)
	resultsMu.Unlock()
	t.Logf("%s: %d runs, %d commands/messages: lost %d, duplicated %d, false acks %d, in doubt %d, recover %s",
		r.fault, r.runs, r.commands, r.lost, r.duplicated, r.falseAck, r.inDoubt, recoverText(r.recover))
	if r.lost+r.duplicated+r.falseAck > 0 {
		t.Errorf("%s: lost %d, duplicated %d, false acknowledgements %d: all must be 0", r.fault, r.lost, r.duplicated, r.falseAck)
	}
}

func recoverText(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("p50 %s, max %s", s[len(s)/2].Round(10*time.Millisecond), s[len(s)-1].Round(10*time.Millisecond))
}

func printTable(w io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	mode := "short run (make test)"
	if full {
		mode = "full figures (make chaos)"
	}
	fmt.Fprintf(w, "\nline-agent chaos, %s, %s\n\n", mode, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintln(w, "| fault | runs | commands | lost | duplicated | false acks | in doubt | time to recover | note |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|---|")
	for _, r := range results {
		inDoubt := fmt.Sprint(r.inDoubt)
		if r.commands > 0 && r.inDoubt > 0 {
			inDoubt = fmt.Sprintf("%d (%.1f%%)", r.inDoubt, 100*float64(r.inDoubt)/float64(r.commands))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %s | %s | %s |\n",
			r.fault, r.runs, r.commands, r.lost, r.duplicated, r.falseAck, inDoubt, recoverText(r.recover), r.note)
	}
}

// ---- binaries and stacks -----------------------------------------------------

// bins are built once for the suite, with -tags chaos: the agent's crash
// points and injected faults (agent/failpoint_chaos.go).
var bins = &localstack.Binaries{Tags: []string{"chaos"}}

func TestMain(m *testing.M) {
	code := m.Run()
	printTable(os.Stdout)
	if p := os.Getenv("LINE_CHAOS_TABLE"); p != "" {
		if f, err := os.Create(p); err == nil {
			printTable(f)
			f.Close()
		}
	}
	bins.Remove()
	os.Exit(code)
}

// startStack starts a relay and an agent on the simulated Messages, built
// once per run, stopped when the test ends (logs shown if it failed).
func startStack(ctx context.Context, t *testing.T, agentArgs ...string) *localstack.Stack {
	t.Helper()
	return startWith(ctx, t, localstack.Options{AgentArgs: agentArgs})
}

// startWith is startStack with more to say than the agent's flags.
func startWith(ctx context.Context, t *testing.T, opts localstack.Options) *localstack.Stack {
	t.Helper()
	relayBin, agentBin, err := bins.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts.Dir, opts.RelayBin, opts.AgentBin = dir, relayBin, agentBin
	st, err := localstack.Start(ctx, opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, tails(dir))
	}
	t.Cleanup(func() {
		st.Close()
		if t.Failed() {
			t.Logf("%s", tails(dir))
		}
	})
	return st
}

func tails(dir string) string {
	var b strings.Builder
	for _, name := range []string{"relay", "agent"} {
		data, err := os.ReadFile(filepath.Join(dir, name+".log"))
		if err != nil {
			continue
		}
		if len(data) > 32<<10 {
			data = data[len(data)-32<<10:]
		}
		fmt.Fprintf(&b, "--- %s.log (tail)\n%s\n", name, data)
	}
	return b.String()
}

// ---- sends -------------------------------------------------------------------

// peers are the simulated people the sends go to: several chats, so the
// agent runs commands side by side as it does for real traffic.
var peers = []string{"+15557654301", "+15557654302", "+15557654303", "+15557654304"}

// sendText is command i of a run: a unique text, so chat.db shows exactly
// which commands reached Messages and how often.
func sendText(prefix string, i int, line string) *linev1.Command {
	return &linev1.Command{
		Id:     fmt.Sprintf("%s-%d", prefix, i),
		Line:   line,
		Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{peers[i%len(peers)]}}},
		// Within finals' bound, so a command stuck to its deadline ends
		// (honestly, DEADLINE_EXCEEDED) before the test judges it lost.
		Deadline: timestamppb.New(time.Now().Add(2 * time.Minute)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: fmt.Sprintf("%s message %d", prefix, i)}},
	}
}

// submitAll submits the commands at a steady pace, retrying a submit that
// fails (the relay may be down: an operator retries with the same id, which
// is never a second command).
func submitAll(ctx context.Context, t *testing.T, st *localstack.Stack, cmds []*linev1.Command, every time.Duration) {
	t.Helper()
	for _, c := range cmds {
		for attempt := 0; ; attempt++ {
			_, _, err := st.Operator.Submit(ctx, c)
			if err == nil {
				break
			}
			if attempt > 600 || ctx.Err() != nil {
				t.Fatalf("submit %s: %v", c.Id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(every)
	}
}

// finals waits (within limit) for every command's final state and returns
// the views; a command still not final is missing from the map.
func finals(ctx context.Context, st *localstack.Stack, cmds []*linev1.Command, limit time.Duration) map[string]*relay.CommandView {
	out := map[string]*relay.CommandView{}
	deadline := time.Now().Add(limit)
	for len(out) < len(cmds) && time.Now().Before(deadline) {
		for _, c := range cmds {
			if out[c.Id] != nil {
				continue
			}
			v, err := st.Operator.Command(ctx, c.Id)
			if err == nil && (v.State == "succeeded" || v.State == "failed") {
				out[c.Id] = v
			}
		}
		if len(out) < len(cmds) {
			time.Sleep(250 * time.Millisecond)
		}
	}
	return out
}

// outgoingTexts counts chat.db's outgoing message rows by text.
func outgoingTexts(ctx context.Context, t *testing.T, chatDB string) map[string]int {
	t.Helper()
	return texts(ctx, t, chatDB, 1)
}

func texts(ctx context.Context, t *testing.T, chatDB string, fromMe int) map[string]int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+chatDB+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT text, attributedBody FROM message WHERE is_from_me = ? AND associated_message_type = 0`, fromMe)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := map[string]int{}
	for rows.Next() {
		var text sql.NullString
		var body []byte
		if err := rows.Scan(&text, &body); err != nil {
			t.Fatal(err)
		}
		if !text.Valid {
			if as, err := typedstream.Decode(body); err == nil {
				text.String = as.Text
			}
		}
		n[text.String]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// judge compares each command's final state with what chat.db holds.
func judge(t *testing.T, cmds []*linev1.Command, fin map[string]*relay.CommandView, rows map[string]int) (r result) {
	t.Helper()
	r.commands = len(cmds)
	for _, c := range cmds {
		n := rows[c.GetSendText().GetText()]
		v := fin[c.Id]
		if n > 1 {
			r.duplicated++
			t.Errorf("%s is in chat.db %d times", c.Id, n)
		}
		switch {
		case v == nil:
			r.lost++
			t.Errorf("%s has no final result", c.Id)
		case v.State == "succeeded" && n == 0:
			r.falseAck++
			t.Errorf("%s succeeded but chat.db has no row", c.Id)
		case v.State == "failed" && v.Error != nil && v.Error.Code == "IN_DOUBT":
			r.inDoubt++
		case v.State == "failed" && n > 0:
			r.falseAck++
			t.Errorf("%s failed (%+v) but chat.db has its row", c.Id, v.Error)
		}
	}
	return r
}

// jitter is a random duration in [lo, hi).
func jitter(rnd *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rnd.Int64N(int64(hi-lo)))
}

// failureCodes counts the failed commands of fin by error code, as
// fmtCounts prints them.
func failureCodes(fin map[string]*relay.CommandView) string {
	codes := map[string]int{}
	for _, v := range fin {
		if v.Error != nil {
			codes[v.Error.Code]++
		}
	}
	return fmtCounts(codes)
}

// fmtCounts is a map of counts as "A 2, B 1" (sorted), or "none".
func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", k, m[k])
	}
	return b.String()
}
