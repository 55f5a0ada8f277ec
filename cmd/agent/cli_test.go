package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/typedstream"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = realMain(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestConfigRedactsSecretsAndFlagsOverrideEnv(t *testing.T) {
	t.Setenv("LINE_AGENT_TOKEN", "lrp_supersecret")
	t.Setenv("LINE_AGENT_DRIVER", "sim")
	t.Setenv("LINE_AGENT_LINES", "+15550000001")
	code, out, errOut := run(t, "config", "--driver", "macos", "--data", "/tmp/x")
	if code != 0 {
		t.Fatalf("config exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "supersecret") {
		t.Fatalf("config printed the token:\n%s", out)
	}
	for _, want := range []string{"[redacted]", "LINE_AGENT_DRIVER", "macos", "/tmp/x", "+15550000001"} {
		if !strings.Contains(out, want) {
			t.Errorf("config output lacks %q:\n%s", want, out)
		}
	}
}

func TestUnknownCommandAndBadFlagsExit2(t *testing.T) {
	if code, _, _ := run(t, "frobnicate"); code != 2 {
		t.Fatalf("unknown command exit %d, want 2", code)
	}
	if code, _, _ := run(t, "run", "--no-such-flag"); code != 2 {
		t.Fatalf("bad flag exit %d, want 2", code)
	}
	if code, _, errOut := run(t, "enroll", "--data", t.TempDir()); code != 2 || !strings.Contains(errOut, "--relay") {
		t.Fatalf("enroll without relay: exit %d %q", code, errOut)
	}
	if code, _, _ := run(t, "version"); code != 0 {
		t.Fatal("version failed")
	}
}

func TestEnrollRefusesPlaintextToNonLoopback(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tok, []byte("lrp_x\n"), 0o600)
	code, _, errOut := run(t, "enroll", "--relay", "relay.example.com:443", "--plaintext", "--token-file", tok, "--data", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "loopback") {
		t.Fatalf("exit %d %q, want a refusal naming loopback", code, errOut)
	}
	if strings.Contains(errOut, "lrp_x") {
		t.Fatal("the token appeared in an error")
	}
}

func TestDecodeAttributedBody(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, typedstream.EncodeText("hello \"world\""), 0o600)
	code, out, errOut := run(t, "decode", "attributed-body", good)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		Text string            `json:"text"`
		Runs []json.RawMessage `json:"runs"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || got.Text != "hello \"world\"" || got.Runs == nil {
		t.Fatalf("decode printed %q (%v)", out, err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not a typedstream"), 0o600)
	if code, _, errOut := run(t, "decode", "attributed-body", bad); code == 0 || errOut == "" {
		t.Fatalf("garbage: exit %d %q, want a clear failure", code, errOut)
	}
	// The real sample without text, when the third-party vectors are here.
	blank := "../../../shared/testdata/attributed-body/Blank.typedstream"
	if _, err := os.Stat(blank); err != nil {
		t.Log("third-party test data at ../shared/testdata is absent; the Blank sample is not checked")
		return
	}
	if code, _, errOut := run(t, "decode", "attributed-body", blank); code == 0 || !strings.Contains(errOut, "no text") {
		t.Fatalf("Blank: exit %d %q, want non-zero saying there is no text", code, errOut)
	}
}

func TestInspectPrintsEventsAsJSONLines(t *testing.T) {
	dir := t.TempDir()
	st, err := sim.Create(filepath.Join(dir, "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	chat, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"one", "two \"quoted\"", "three"} {
		if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, Text: text}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := run(t, "inspect", "--db", filepath.Join(dir, "chat.db"), "--since", "1")
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("inspect --since 1 printed %d lines, want the 2 later messages:\n%s", len(lines), out)
	}
	var ev struct {
		Message struct {
			Text string `json:"text"`
		} `json:"message"`
		RowID string `json:"row_id"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil || ev.Message.Text != "two \"quoted\"" {
		t.Fatalf("first line %q: %v", lines[0], err)
	}
	// Without --since a one-shot look prints everything, not nothing.
	if code, out, errOut := run(t, "inspect", "--db", filepath.Join(dir, "chat.db")); code != 0 || len(strings.Split(strings.TrimSpace(out), "\n")) != 3 {
		t.Fatalf("inspect without --since: exit %d, printed %q (%s); want all 3 messages", code, out, errOut)
	}
	if code, out, errOut := run(t, "inspect", "--db", filepath.Join(dir, "chat.db"), "--since", "99"); code != 0 || out != "" || !strings.Contains(errOut, "nothing in") {
		t.Fatalf("inspect past the end: exit %d, out %q, err %q; want nothing printed and said so", code, out, errOut)
	}
	if code, _, errOut := run(t, "inspect", "--db", filepath.Join(dir, "missing.db")); code == 0 || errOut == "" {
		t.Fatalf("missing db: exit %d %q, want a clear failure", code, errOut)
	}
}

func TestCheckLinesAgainstAccountAddresses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithLine("+15550000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	chat, _ := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if _, err := st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	r, err := chatdb.Open(path, chatdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if c := checkLines(ctx, r, []string{"+1 555 000 0001"}); c.status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("the account's own line: %+v", c)
	}
	c := checkLines(ctx, r, []string{"+15550000001", "+15559999999"})
	if c.status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(c.detail, "+15559999999") {
		t.Fatalf("a line the account never used: %+v", c)
	}
}

// TestMacOSBackendWiresOnLinux opens the real-Mac backend against a
// simulated chat.db: the AppleScript sender offers plain sends at once, the
// helper's commands wait for a helper, and health says so.
func TestMacOSBackendWiresOnLinux(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sim.Create(filepath.Join(dir, "chat.db"), sim.WithLine("+15550000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg, err := agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Driver, cfg.DataDir, cfg.ChatDB = "macos", dir, filepath.Join(dir, "chat.db")
	cfg.Lines, cfg.HelperAddr, cfg.Osascript = []string{"+15550000001"}, "127.0.0.1:0", filepath.Join(dir, "no-osascript")
	be, err := openBackend(ctx, cfg, newLogger(io.Discard, "error"))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	caps := be.Driver.Capabilities()
	if !slices.Contains(caps, linev1.Capability_CAPABILITY_SEND_TEXT) || slices.Contains(caps, linev1.Capability_CAPABILITY_TYPING) {
		t.Fatalf("without a helper the macOS driver offers %v; want plain sends only", caps)
	}
	names := map[string]linev1.HealthStatus{}
	for _, c := range be.Components() {
		names[c.GetName()] = c.GetStatus()
	}
	if _, ok := names["helper"]; !ok {
		t.Fatalf("health components %v lack the helper", names)
	}
	if _, ok := names["lines"]; !ok {
		t.Fatalf("health components %v lack the lines check", names)
	}
}
