package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay/opclient"
)

// buildBinaries builds line-agent and line-relay once per test binary: the
// crash tests kill real processes.
func buildBinaries(t *testing.T) (agentBin, relayBin string) {
	t.Helper()
	dir := t.TempDir()
	agentBin, relayBin = filepath.Join(dir, "line-agent"), filepath.Join(dir, "line-relay")
	for bin, pkg := range map[string]string{agentBin: ".", relayBin: "../relay"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return agentBin, relayBin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type proc struct {
	cmd *exec.Cmd
	log string
}

func startProc(t *testing.T, logPath, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath}
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func waitHealthy(t *testing.T, api *opclient.Client, limit time.Duration, logs ...*proc) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		as, err := api.Agents(context.Background())
		if err == nil && len(as) == 1 && as[0].Connected && as[0].Healthy {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	var b strings.Builder
	for _, p := range logs {
		b.WriteString(p.logText())
	}
	t.Fatalf("agent not healthy within %v\n%s", limit, b.String())
}

func TestAgentKilledAndRestartedComesBackHealthy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills real processes")
	}
	agentBin, relayBin := buildBinaries(t)
	dir := t.TempDir()
	relayDir, agentDir := filepath.Join(dir, "relay"), filepath.Join(dir, "agent")
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	tok, err := exec.Command(relayBin, "token", "create", "--data", relayDir).Output()
	if err != nil {
		t.Fatal(err)
	}
	relay := startProc(t, filepath.Join(dir, "relay.log"), relayBin, "serve", "--data", relayDir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr)
	api := opclient.New(httpAddr)
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := api.Agents(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay not up:\n%s", relay.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	enroll := exec.Command(agentBin, "enroll", "--relay", grpcAddr, "--ca", filepath.Join(relayDir, "ca.pem"), "--token-file", "-", "--data", agentDir)
	enroll.Stdin = strings.NewReader(string(tok))
	if out, err := enroll.CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	} else if strings.Contains(string(out), strings.TrimSpace(string(tok))) {
		t.Fatal("enroll printed the project token")
	}
	info, err := os.Stat(filepath.Join(agentDir, "credentials.json"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("credentials.json: %v mode %v, want 0600", err, info.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(agentDir, "credentials.json")); strings.Contains(string(b), strings.TrimSpace(string(tok))) {
		t.Fatal("the project token was stored")
	}

	runArgs := []string{"run", "--data", agentDir, "--driver", "sim", "--sim-reply-delay", "50ms"}
	agentLog := filepath.Join(dir, "agent.log")
	a := startProc(t, agentLog, agentBin, runArgs...)
	waitHealthy(t, api, 20*time.Second, a, relay)

	send := func(id string) {
		t.Helper()
		cmd := &linev1.Command{Id: id, Line: "+15550000001",
			Target:   &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"+15557654321"}}},
			Deadline: timestamppb.New(time.Now().Add(20 * time.Second)),
			Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "text " + id}}}
		if _, _, err := api.Submit(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		v, err := api.Final(cctx, id, nil)
		if err != nil || v.State != "succeeded" {
			t.Fatalf("%s: %v %+v\n%s", id, err, v, a.logText())
		}
	}
	send("before-kill")

	a.kill() // SIGKILL: no Goodbye, no cleanup
	a = startProc(t, agentLog, agentBin, runArgs...)
	waitHealthy(t, api, 20*time.Second, a, relay)
	send("after-kill")
	if n := strings.Count(a.logText(), "connected to relay"); n < 2 {
		t.Fatalf("want a connection per run, log shows %d", n)
	}

	// SIGTERM: the staged shutdown exits 0 and the relay sees a Goodbye.
	_ = syscall.Kill(a.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v\n%s", err, a.logText())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop after SIGTERM")
	}
	as, _ := api.Agents(ctx)
	if len(as) != 1 || as[0].Connected {
		t.Fatalf("after shutdown the relay still shows the agent connected: %+v", as)
	}
	fmt.Fprint(os.Stderr, "")
}
