package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/promscrape"
)

// serve --metrics-addr prints where the metrics are and serves them.
func TestServeMetricsAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--data", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"}, out, errOut)
	}()
	var addr string
	for deadline := time.Now().Add(5 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, l := range strings.Split(out.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "metrics: "); ok {
				addr = a
			}
		}
	}
	if addr == "" {
		t.Fatalf("no metrics address printed; stdout %q stderr %q", out.String(), errOut.String())
	}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	page, err := promscrape.Get(sctx, "http://"+addr+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := page.Value("line_relay_agents_connected"); !ok || n != 0 {
		t.Fatalf("line_relay_agents_connected = %v (present %v), want 0", n, ok)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}
