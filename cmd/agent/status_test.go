package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/line-agent/line-agent/agent"
)

// The running agent's health, read from another process's point of view:
// `line-agent status` (text and --json) and grpc.health.v1 on the status
// socket, with the same components the relay's health check gets; the
// socket is the user's alone; with no agent running, status fails and
// says so.
func TestStatusFromOutside(t *testing.T) {
	h := startE2E(t, simSetup{})
	sock := filepath.Join(h.dataDir, "status.sock")
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("%s within 10 s", what)
			}
		}
	}
	waitFor("the status socket", func() bool { _, err := os.Stat(sock); return err == nil })
	if fi, _ := os.Stat(sock); fi.Mode().Perm() != 0o600 {
		t.Errorf("status socket mode %v, want 0600", fi.Mode().Perm())
	}
	t.Setenv("LINE_AGENT_DATA_DIR", h.dataDir)

	var out, errOut strings.Builder
	waitFor("status to report the relay stream", func() bool {
		out.Reset()
		errOut.Reset()
		code := realMain(context.Background(), []string{"status"}, &out, &errOut)
		return code == 0 && strings.Contains(out.String(), "relay")
	})
	text := out.String()
	for _, want := range []string{"line-agent: OK", "journal", "quota", "line +15550000001"} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, text)
		}
	}

	out.Reset()
	if code := realMain(context.Background(), []string{"status", "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, errOut.String())
	}
	var rep struct {
		Status     string `json:"status"`
		Components []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		} `json:"components"`
	}
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil || rep.Status != "HEALTH_STATUS_OK" || len(rep.Components) < 3 {
		t.Fatalf("status --json: %v %+v\n%s", err, rep, out.String())
	}

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", agent.ServiceName("journal")} {
		// Set again from the report every 2 s: it follows status.
		waitFor("grpc.health.v1 "+svc+" SERVING", func() bool {
			r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
			return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
		})
	}
	if _, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "no-such-component"}); err == nil {
		t.Error("an unknown component answered")
	}

	// grpc-health-probe, the standard probe, pinned in tools/go.mod.
	probe := exec.Command("go", "tool", "-modfile=../../tools/go.mod", "grpc-health-probe", "-addr=unix://"+sock)
	if b, err := probe.CombinedOutput(); err != nil || !strings.Contains(string(b), "SERVING") {
		t.Errorf("grpc-health-probe: %v\n%s", err, b)
	}

	// Another data directory has no agent: status says so, exit 1.
	t.Setenv("LINE_AGENT_DATA_DIR", t.TempDir())
	out.Reset()
	errOut.Reset()
	if code := realMain(context.Background(), []string{"status"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no agent answers") {
		t.Fatalf("status with no agent: exit %d, %q", code, errOut.String())
	}
}
