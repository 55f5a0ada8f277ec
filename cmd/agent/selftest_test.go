package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/line-agent/line-agent/agent"
)

const selftestPeer = "+15557654321"

var allSteps = []string{stepOpen, stepHelper, stepReachable, stepSend, stepDelivered, stepTapback, stepTapbackRow}

// simWith opens the simulated backend with the given test knobs, as
// openBackend would with none.
func simWith(setup simSetup) backendOpener {
	return func(ctx context.Context, cfg agent.Config, log *slog.Logger) (agent.Backend, error) {
		return openSim(ctx, cfg, log, setup)
	}
}

// selftestJSON runs the self-test with --json and returns its exit code
// (as realMain would give it) and report.
func selftestJSON(t *testing.T, open backendOpener, args ...string) (int, selftestReport, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := selftest(context.Background(), open, append(args, "--json"), &out, &errOut)
	code := 0
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		code = ee.code
	case err != nil:
		code = 1
	}
	var rep selftestReport
	if out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
			t.Fatalf("--json output is not JSON: %v\n%s", jerr, out.String())
		}
	}
	return code, rep, errOut.String()
}

func results(rep selftestReport) map[string]stepResult {
	m := map[string]stepResult{}
	for _, s := range rep.Steps {
		m[s.Step] = s
	}
	return m
}

// On the simulated Messages, through the command line the operator types,
// every step passes in order (the sim marks the row sent, then delivered,
// and its helper writes the tapback row), the table says so and the exit
// code is 0.
func TestSelftestOnTheSimPasses(t *testing.T) {
	data := t.TempDir()
	code, out, errOut := run(t, "selftest", "--to", selftestPeer, "--data", data, "--driver", "sim", "--timeout", "30s")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "line-agent selftest to "+selftestPeer+", driver sim: PASS") || !strings.HasPrefix(lines[1], "STEP") {
		t.Fatalf("table header:\n%s", out)
	}
	if len(lines) != 2+len(allSteps) {
		t.Fatalf("%d rows, want %d:\n%s", len(lines)-2, len(allSteps), out)
	}
	for i, step := range allSteps {
		f := strings.Fields(lines[2+i])
		if len(f) < 4 || f[0] != step || f[1] != resultPass {
			t.Errorf("row %d: %q, want %s PASS with a time and a detail", i, lines[2+i], step)
		}
	}
	if !strings.Contains(out, "associated_message_type 2001") || !strings.Contains(out, "delivered (") {
		t.Errorf("the details do not show the delivered row and the tapback's row:\n%s", out)
	}

	code, rep, _ := selftestJSON(t, openBackend, "--to", selftestPeer, "--data", data, "--driver", "sim")
	if code != 0 || !rep.OK || rep.Driver != "sim" || rep.To != selftestPeer || len(rep.Steps) != len(allSteps) {
		t.Fatalf("--json: exit %d %+v", code, rep)
	}
}

// A handle the simulated Messages says is not on iMessage fails the
// reachable step with why; nothing is sent, the later steps say why they
// did not run, and the exit code is 1.
func TestSelftestUnreachableHandleFails(t *testing.T) {
	code, rep, errOut := selftestJSON(t, simWith(simSetup{Unreachable: []string{selftestPeer}}),
		"--to", selftestPeer, "--data", t.TempDir(), "--driver", "sim", "--timeout", "30s")
	if code != 1 || rep.OK {
		t.Fatalf("exit %d ok %v, want 1 and not ok\n%s", code, rep.OK, errOut)
	}
	got := results(rep)
	if r := got[stepReachable]; r.Result != resultFail || !strings.Contains(r.Detail, selftestPeer+" is not reachable on iMessage") {
		t.Errorf("reachable: %+v", r)
	}
	for _, s := range []string{stepSend, stepDelivered, stepTapback, stepTapbackRow} {
		if r := got[s]; r.Result != resultSkip || r.Detail == "" {
			t.Errorf("%s: %+v, want SKIP with why", s, r)
		}
	}
	if got[stepOpen].Result != resultPass || got[stepHelper].Result != resultPass {
		t.Errorf("open and helper should pass: %+v", rep.Steps)
	}
}

// Without the private-API helper the simulated Messages cannot send at
// all (it has no AppleScript): the helper step waits --helper-wait and
// says so, the send fails with the driver's typed error, exit 1.
func TestSelftestWithoutHelperFailsTheSend(t *testing.T) {
	code, rep, _ := selftestJSON(t, simWith(simSetup{NoHelper: true}),
		"--to", selftestPeer, "--data", t.TempDir(), "--driver", "sim", "--timeout", "20s", "--helper-wait", "700ms")
	if code != 1 {
		t.Fatalf("exit %d, want 1: %+v", code, rep)
	}
	got := results(rep)
	if r := got[stepHelper]; r.Result != resultSkip || !strings.Contains(r.Detail, "the private-API helper did not connect within 700ms") || r.Millis < 700 {
		t.Errorf("helper: %+v", r)
	}
	if r := got[stepSend]; r.Result != resultFail || !strings.Contains(r.Detail, "UNSUPPORTED: send_text is not available") {
		t.Errorf("send: %+v", r)
	}
	if r := got[stepDelivered]; r.Result != resultSkip {
		t.Errorf("delivered: %+v", r)
	}
}

// serveHealth answers grpc.health.v1 on a unix socket at path, as a
// running agent's status socket does.
func serveHealth(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
}

// While an agent answers on the data directory's status socket the
// self-test refuses before it opens anything (the simulated Messages'
// folder is not even created) and says how to stop the agent; with
// --allow-running it runs.
func TestSelftestRefusesWhileTheAgentRuns(t *testing.T) {
	data := t.TempDir()
	serveHealth(t, filepath.Join(data, "status.sock"))
	code, out, errOut := run(t, "selftest", "--to", selftestPeer, "--data", data, "--driver", "sim")
	if code != 1 || out != "" {
		t.Fatalf("exit %d stdout %q, want 1 and no table", code, out)
	}
	for _, want := range []string{"an agent is running on this data directory", "launchctl bootout gui/", "dev.line-agent.agent", "--allow-running"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the refusal lacks %q: %s", want, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "sim")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the backend was opened before the refusal: %v", err)
	}
	if code, out, errOut := run(t, "selftest", "--to", selftestPeer, "--data", data, "--driver", "sim", "--allow-running"); code != 0 {
		t.Fatalf("--allow-running: exit %d\n%s\n%s", code, out, errOut)
	}
}

// A bad handle, a missing one and a bad log format are usage errors
// (exit 2) naming the problem, before anything runs.
func TestSelftestRefusesBadInput(t *testing.T) {
	data := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--to HANDLE is required"},
		{[]string{"--to", "bob; tell application"}, "--to: INVALID_ARGUMENT: a handle must be a phone number"},
		{[]string{"--to", "+0123456789"}, "country code"},
		{[]string{"--to", selftestPeer, "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"--to", selftestPeer, "--helper-wait", "-1s"}, "--helper-wait not negative"},
		{[]string{"--to", selftestPeer, "--log-format", "xml"}, `unknown log format "xml": want text, json or auto`},
	} {
		code, out, errOut := run(t, append([]string{"selftest", "--data", data, "--driver", "sim"}, c.args...)...)
		if code != 2 || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d stdout %q stderr %q, want 2 naming %q", c.args, code, out, errOut, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "sim")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused self-test opened the backend: %v", err)
	}
}
