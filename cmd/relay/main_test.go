package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTokenCreatePrintsOnlyTheToken(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"token", "create", "--data", t.TempDir()}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "lrp_") || len(lines[0]) < 40 {
		t.Fatalf("stdout %q", out.String())
	}
}

func TestUsageAndVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "line-relay ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"-h"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "token create") {
		t.Fatalf("-h: %v %q", err, out.String())
	}
	var code exitCode
	if err := run(context.Background(), []string{"bogus"}, &out, &errOut); !errors.As(err, &code) || code != 2 {
		t.Fatalf("unknown command: %v", err)
	}
	if err := run(context.Background(), []string{"serve"}, &out, &errOut); !errors.As(err, &code) || code != 2 {
		t.Fatalf("serve without --data: %v", err)
	}
	for _, flag := range []string{"--event-retention", "--command-retention", "--upload-ttl"} {
		errOut.Reset()
		err := run(context.Background(), []string{"serve", "--data", t.TempDir(), flag, "0s"}, &out, &errOut)
		if !errors.As(err, &code) || code != 2 || !strings.Contains(errOut.String(), flag+" must be positive") {
			t.Fatalf("serve %s 0s: %v %q", flag, err, errOut.String())
		}
	}
}

func TestServePrintsAddressesAndStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, out, errOut)
	}()
	var httpAddr string
	deadline := time.Now().Add(5 * time.Second)
	for httpAddr == "" && time.Now().Before(deadline) {
		for _, l := range strings.Split(out.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "http: "); ok {
				httpAddr = a
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if httpAddr == "" {
		t.Fatalf("no http address printed; stdout %q stderr %q", out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "ca: "+dir+"/ca.pem") || !strings.Contains(out.String(), "grpc: 127.0.0.1:") {
		t.Fatalf("stdout %q", out.String())
	}
	if _, err := os.Stat(dir + "/ca.pem"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + httpAddr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(errOut.String(), "relay started") {
		t.Fatalf("no logs on stderr: %q", errOut.String())
	}
}

func TestTokenLinesAndLineCommands(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"token", "create", "--data", dir, "--lines", "+15550000001, +1 555 000 0002"}, &out, &errOut); err != nil {
		t.Fatalf("token create --lines: %v %s", err, errOut.String())
	}
	if err := run(context.Background(), []string{"token", "create", "--data", dir, "--lines", "not-a-line"}, &out, &errOut); err == nil {
		t.Fatal("a token for a malformed line was created")
	}
	out.Reset()
	if err := run(context.Background(), []string{"line", "list", "--data", dir}, &out, &errOut); err != nil || out.Len() != 0 {
		t.Fatalf("line list: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"line", "move", "--data", dir, "+15550000001", "agt_nosuch"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no such agent") {
		t.Fatalf("move to an unknown agent: %v", err)
	}
	var code exitCode
	if err := run(context.Background(), []string{"line", "move", "--data", dir, "+15550000001"}, &out, &errOut); !errors.As(err, &code) || code != 2 {
		t.Fatalf("move without an agent: %v", err)
	}
}

func TestAPITokenCommands(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"api-token", "create", "--data", dir, "--line", "+15550000001"}, &out, &errOut); err != nil {
		t.Fatalf("create: %v %s", err, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	if !strings.HasPrefix(tok, "lrk_") || strings.Contains(errOut.String(), tok) {
		t.Fatalf("stdout %q stderr %q", tok, errOut.String())
	}
	id := strings.TrimSpace(strings.TrimPrefix(errOut.String(), "created API token "))
	out.Reset()
	if err := run(context.Background(), []string{"api-token", "create", "--data", dir, "--pool", "+15550000001,+15550000002"}, &out, &errOut); err != nil {
		t.Fatalf("create pool: %v", err)
	}
	var code exitCode
	if err := run(context.Background(), []string{"api-token", "create", "--data", dir}, &out, &errOut); !errors.As(err, &code) || code != 2 {
		t.Fatalf("create without a line: %v", err)
	}
	if err := run(context.Background(), []string{"api-token", "create", "--data", dir, "--line", "nope"}, &out, &errOut); err == nil {
		t.Fatal("a token for a malformed line was created")
	}
	if err := run(context.Background(), []string{"api-token", "revoke", "--data", dir, id}, &out, &errOut); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"api-token", "list", "--data", dir}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], id) || !strings.Contains(lines[0], "revoked") || !strings.Contains(lines[1], "pool\t+15550000001,+15550000002\tactive") {
		t.Fatalf("list:\n%s", out.String())
	}
	if strings.Contains(out.String(), "lrk_") {
		t.Fatal("list prints a token")
	}
	if err := run(context.Background(), []string{"api-token", "revoke", "--data", dir, "apt_nosuch"}, &out, &errOut); err == nil {
		t.Fatal("revoking an unknown id succeeded")
	}
}
