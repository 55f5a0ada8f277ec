package spectrum

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/localstack"
	"github.com/line-agent/line-agent/pkg/typedstream"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay/opclient"
)

// The people and the line of the scenario: the simulated Messages serves
// line and the simulated people answer every message ("got it: <text>").
const (
	line         = "+15550000001"
	peer         = "+15557654321"
	peer2        = "+15557654322"
	backgroundMS = 1200
)

// nodeModules finds the SDK installed by `npm ci` (make test runs it). A
// machine without it skips, and says how to get it; CI fails instead.
func nodeModules(t *testing.T) (node string) {
	t.Helper()
	need := func(why string) {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s; CI must run the spectrum-ts test (`npm ci --prefix e2e/spectrum`)", why)
		}
		t.Skipf("%s: run `make e2e-deps` (npm ci in e2e/spectrum) to include the spectrum-ts test", why)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		need("node is not installed")
	}
	if _, err := os.Stat(filepath.Join("node_modules", "spectrum-ts", "package.json")); err != nil {
		need("e2e/spectrum/node_modules has no spectrum-ts")
	}
	return node
}

// bins are built once for the package's tests; TestMain removes them.
var bins = &localstack.Binaries{}

func TestMain(m *testing.M) {
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// startStack starts a relay serving the platform API and an agent on the
// simulated Messages, stopped when the test ends.
func startStack(ctx context.Context, t *testing.T, agentArgs ...string) *localstack.Stack {
	t.Helper()
	relay, agent, err := bins.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := localstack.Start(ctx, localstack.Options{Dir: dir, RelayBin: relay, AgentBin: agent, API: true, AgentArgs: agentArgs})
	if err != nil {
		t.Fatalf("%v\n%s", err, logs(dir))
	}
	t.Cleanup(func() {
		st.Close()
		if t.Failed() {
			t.Logf("%s", logs(dir))
		}
	})
	return st
}

// apiAddress is the platform API as an app dials it: by the name the dev
// certificate carries.
func apiAddress(st *localstack.Stack) string {
	return "localhost" + st.APIAddr[strings.LastIndex(st.APIAddr, ":"):]
}

// TestSpectrumTS runs scenario.mjs, an unmodified spectrum-ts app, against
// real processes, and checks every id it was given against the events the
// relay streamed: a GUID a write returned is the GUID of every later event
// about that message.
func TestSpectrumTS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes and a Node app")
	}
	node := nodeModules(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// Replies come 1.5 s after a send: long enough for the relay to be
	// down when the restart step's replies land.
	// Two new conversations a day: the DM and the group's second person
	// take them, and the scenario's third person meets the quota.
	st := startStack(ctx, t, "--sim-reply-delay", "1500ms", "--sim-background-delay", fmt.Sprintf("%dms", backgroundMS),
		"--quota-new-conversations", "2")
	token, err := st.APIToken(ctx, "--line", line)
	if err != nil {
		t.Fatal(err)
	}
	// A token for a line no Mac serves: its calls answer UNAVAILABLE.
	noMac, err := st.APIToken(ctx, "--line", "+15550000999")
	if err != nil {
		t.Fatal(err)
	}

	app := exec.CommandContext(ctx, node, "scenario.mjs")
	app.Env = append(os.Environ(),
		"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH="+st.CA(),
		"SPECTRUM_ADDRESS="+apiAddress(st),
		"SPECTRUM_TOKEN="+token,
		"SPECTRUM_NO_MAC_TOKEN="+noMac,
		"SPECTRUM_LINE="+line,
		"SPECTRUM_PEER="+peer,
		"SPECTRUM_PEER2="+peer2,
		fmt.Sprintf("SPECTRUM_BACKGROUND_MS=%d", backgroundMS),
		"SPECTRUM_PHOTO_HEX="+hex.EncodeToString(sim.SamplePhoto()),
		"LOG_LEVEL=warn",
	)
	stdin, err := app.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := app.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	app.Stderr = &stderr
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}

	var done map[string]any
	var steps []string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		kind, body, ok := strings.Cut(sc.Text(), " ")
		switch {
		case !ok || !strings.HasPrefix(kind, "@@"):
			t.Logf("app: %s", sc.Text())
		case kind == "@@step":
			var s struct {
				Name  string
				OK    bool
				MS    int64
				Error string
			}
			_ = json.Unmarshal([]byte(body), &s)
			steps = append(steps, s.Name)
			if s.OK {
				t.Logf("step ok (%d ms): %s", s.MS, s.Name)
			} else {
				t.Errorf("step failed after %d ms: %s\n%s", s.MS, s.Name, s.Error)
			}
		case kind == "@@ctrl":
			answer := map[string]any{"ok": true}
			if err := control(ctx, t, st, body); err != nil {
				answer = map[string]any{"ok": false, "error": err.Error()}
				t.Errorf("control %s: %v", body, err)
			}
			b, _ := json.Marshal(answer)
			if _, err := fmt.Fprintf(stdin, "%s\n", b); err != nil {
				t.Errorf("answer the app: %v", err)
			}
		case kind == "@@done":
			if err := json.Unmarshal([]byte(body), &done); err != nil {
				t.Errorf("done line: %v", err)
			}
		}
	}
	werr := app.Wait()
	if werr != nil || done == nil {
		t.Fatalf("the app ended with %v after steps %q\napp stderr:\n%s", werr, steps, stderr.String())
	}
	checkEvents(ctx, t, st.Operator, done)
	checkNoSecretsLogged(t, st, token, noMac)
	if t.Failed() {
		t.Logf("app stderr:\n%s", stderr.String())
	}
}

// control does what the app asks of the world around it.
func control(ctx context.Context, t *testing.T, st *localstack.Stack, body string) error {
	var req struct {
		Op    string
		Texts []string
	}
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		return err
	}
	switch req.Op {
	case "restart-relay-around-replies":
		st.StopRelay()
		t.Logf("relay stopped; waiting for %d replies to land in chat.db", len(req.Texts))
		if err := waitForRows(ctx, st.ChatDB(), req.Texts, 45*time.Second); err != nil {
			return err
		}
		t.Logf("replies are in chat.db; starting the relay again")
		return st.StartRelay(ctx)
	}
	return fmt.Errorf("unknown op %q", req.Op)
}

// waitForRows waits until chat.db holds an incoming row for each text.
func waitForRows(ctx context.Context, chatDB string, texts []string, limit time.Duration) error {
	db, err := sql.Open("sqlite", "file:"+chatDB+"?mode=ro&_pragma=busy_timeout(2000)")
	if err != nil {
		return err
	}
	defer db.Close()
	return localstack.WaitFor(ctx, limit, func() error {
		have := map[string]bool{}
		rows, err := db.QueryContext(ctx, `SELECT text, attributedBody FROM message WHERE is_from_me = 0 AND associated_message_type = 0`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var text sql.NullString
			var body []byte
			if err := rows.Scan(&text, &body); err != nil {
				return err
			}
			if as, err := typedstream.Decode(body); err == nil && !text.Valid {
				text.String = as.Text
			}
			have[text.String] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, text := range texts {
			if !have[text] {
				return fmt.Errorf("no incoming %q in chat.db yet", text)
			}
		}
		return nil
	})
}

// checkEvents reads every event the relay stored and checks that each id
// the app got back names the event about it.
func checkEvents(ctx context.Context, t *testing.T, api *opclient.Client, done map[string]any) {
	t.Helper()
	id := func(k string) string { s, _ := done[k].(string); return s }
	evs := allEvents(ctx, t, api)
	find := func(what string, match func(*linev1.Event) bool) {
		t.Helper()
		for _, e := range evs {
			if match(e) {
				return
			}
		}
		t.Errorf("no event: %s", what)
	}
	inbound := id("inbound")
	find("the edit of the message hello's send returned", func(e *linev1.Event) bool {
		return e.GetEdited() != nil && e.GetMessageGuid() == id("hello")
	})
	find("the sent message with the confetti effect", func(e *linev1.Event) bool {
		return e.GetMessage().GetFromMe() && e.GetMessageGuid() == id("effect") && e.GetMessage().GetEffect() != ""
	})
	find("the threaded reply to the inbound message", func(e *linev1.Event) bool {
		return e.GetMessage().GetFromMe() && e.GetMessageGuid() == id("reply") && e.GetMessage().GetReplyTo().GetMessageGuid() == inbound
	})
	find("our heart on the inbound message, with the GUID the reaction returned", func(e *linev1.Event) bool {
		tb := e.GetTapback()
		return tb.GetFromMe() && !tb.GetRemoved() && tb.GetTapback() == "love" && tb.GetTargetMessageGuid() == inbound && e.GetMessageGuid() == id("heart")
	})
	find("the heart removed", func(e *linev1.Event) bool {
		tb := e.GetTapback()
		return tb.GetFromMe() && tb.GetRemoved() && tb.GetTapback() == "love" && tb.GetTargetMessageGuid() == inbound
	})
	find("our 🎉 on the inbound message", func(e *linev1.Event) bool {
		tb := e.GetTapback()
		return tb.GetFromMe() && tb.GetEmoji() == "🎉" && tb.GetTargetMessageGuid() == inbound && e.GetMessageGuid() == id("emoji")
	})
	find("the unsend", func(e *linev1.Event) bool { return e.GetUnsent() != nil && e.GetMessageGuid() == id("unsent") })
	find("the attachment sent", func(e *linev1.Event) bool {
		return e.GetMessage().GetFromMe() && e.GetMessageGuid() == id("attachment") && len(e.GetMessage().GetAttachments()) == 1
	})
	find("the group renamed", func(e *linev1.Event) bool {
		return e.GetGroup() != nil && strings.Contains(e.String(), "line-agent e2e")
	})
	for _, text := range []string{"got it: gap-1", "got it: gap-2", "got it: gap-3"} {
		n := 0
		for _, e := range evs {
			if m := e.GetMessage(); m != nil && !m.GetFromMe() && m.GetText() == text {
				n++
			}
		}
		if n != 1 {
			t.Errorf("the relay stored %d events of %q, want 1", n, text)
		}
	}
}

// allEvents is every event the relay has stored, in order.
func allEvents(ctx context.Context, t *testing.T, api *opclient.Client) []*linev1.Event {
	t.Helper()
	var evs []*linev1.Event
	var after int64
	for range 1000 {
		page, err := api.Events(ctx, after, 0)
		if err != nil {
			t.Fatalf("events: %v", err)
		}
		for _, v := range page.Events {
			e, err := opclient.Event(v)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, e)
		}
		if len(page.Events) == 0 || page.Next <= after {
			break
		}
		after = page.Next
	}
	return evs
}

// checkNoSecretsLogged greps the whole run's logs (relay, agent, the app's
// stderr is the SDK's) for every secret the run issued: the API tokens,
// and the agent's secret and access token from its credentials.
func checkNoSecretsLogged(t *testing.T, st *localstack.Stack, secrets ...string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(st.AgentDir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var creds struct {
		AgentSecret string `json:"agent_secret"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &creds); err != nil || creds.AgentSecret == "" {
		t.Fatalf("credentials.json: %v", err)
	}
	secrets = append(secrets, creds.AgentSecret, creds.AccessToken)
	for _, name := range []string{"relay", "agent"} {
		data, err := os.ReadFile(st.Log(name))
		if err != nil {
			t.Fatal(err)
		}
		for i, sec := range secrets {
			if sec != "" && strings.Contains(string(data), sec) {
				t.Errorf("%s.log holds secret #%d", name, i)
			}
		}
	}
}

func logs(dir string) string {
	var b strings.Builder
	for _, name := range []string{"relay", "agent"} {
		data, err := os.ReadFile(filepath.Join(dir, name+".log"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if len(data) > 64<<10 {
			data = data[len(data)-64<<10:]
		}
		fmt.Fprintf(&b, "--- %s.log (tail)\n%s\n", name, data)
	}
	return b.String()
}

// lockedBuffer is the app's stderr, written by exec's copier and read by
// the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)
