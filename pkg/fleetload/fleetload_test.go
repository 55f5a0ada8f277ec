package fleetload

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/pgtest"
	"github.com/line-agent/line-agent/relay"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m).Run()) }

// startRelay is an in-process relay on loopback TLS whose log feeds fl.
func startRelay(t *testing.T, store string, fl *FinishLog) (*relay.Server, Target) {
	t.Helper()
	srv, err := relay.New(relay.Options{DataDir: t.TempDir(), Store: store, Logger: slog.New(fl)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, Target{GRPCAddr: srv.GRPCAddr(), CAFile: srv.CAFile(), HTTPAddr: srv.HTTPAddr()}
}

// TestFleet runs a small fleet through everything the bench asks of it:
// each agent enrolled on its own, connected and healthy at the relay;
// commands in a closed and a paced loop through the operator API, every
// one answered and stored as succeeded; events from the agents reaching
// every subscriber once.
func TestFleet(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			store := ""
			if backend == "postgres" {
				store = pgtest.Database(t)
			}
			testFleet(t, store)
		})
	}
}

func testFleet(t *testing.T, store string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fl := NewFinishLog()
	srv, target := startRelay(t, store, fl)
	tok, err := srv.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	f, err := Start(ctx, Options{Targets: []Target{target}, Agents: n, ProjectToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Ready means the first health report is sent; the relay takes it
	// a moment later.
	var agents []relay.AgentView
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if agents, err = srv.Agents(ctx); err != nil {
			t.Fatal(err)
		}
		healthy := 0
		for _, a := range agents {
			if a.Healthy {
				healthy++
			}
		}
		if healthy == n {
			break
		}
	}
	ids := map[string]bool{}
	for _, a := range agents {
		if !a.Connected || !a.Healthy || a.Version != Version || len(a.HeldLines) != 1 {
			t.Errorf("agent %s: connected %v healthy %v version %q held %v", a.ID, a.Connected, a.Healthy, a.Version, a.HeldLines)
		}
		ids[a.ID] = true
	}
	if len(agents) != n || len(ids) != n {
		t.Fatalf("the relay lists %d agents (%d ids), want %d", len(agents), len(ids), n)
	}

	closed, err := Run(ctx, Load{Lines: f.Lines(), Results: fl, Clients: 8, Warmup: 200 * time.Millisecond, Duration: time.Second, IDPrefix: "closed-"})
	if err != nil {
		t.Fatal(err)
	}
	if closed.Done == 0 || closed.Failed+closed.TimedOut+closed.Refused > 0 || len(closed.Latencies) == 0 {
		t.Fatalf("closed loop: %+v (first refusal %q)", closed, closed.FirstRefusal)
	}
	paced, err := Run(ctx, Load{Lines: f.Lines(), Results: fl, Clients: 8, Rate: 50, Duration: time.Second, IDPrefix: "paced-"})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(paced.Latencies); got < 45 || got > 51 || len(paced.Posted) != got || paced.Failed+paced.TimedOut+paced.Refused > 0 {
		t.Fatalf("paced at 50/s for 1 s: %d results, %+v", got, paced)
	}
	for i, d := range paced.Latencies {
		if p := paced.Posted[i]; p <= 0 || p > d {
			t.Fatalf("paced command %d: %v from the POST, %v from when it was due", i, p, d)
		}
	}
	// What the relay stored, read back through the operator API.
	for _, id := range []string{"closed-00000001", "paced-00000001"} {
		resp, err := http.Get("http://" + target.HTTPAddr + "/v1/commands/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			State   string `json:"state"`
			AgentID string `json:"agent_id"`
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || v.State != "succeeded" || !ids[v.AgentID] {
			t.Errorf("command %s: %+v, %v", id, v, err)
		}
	}
	if fin, err := Submit(ctx, fl, target, f.Lines()[3], "probe-1", 5*time.Second, 5*time.Second); err != nil || fin.State != "succeeded" {
		t.Errorf("Submit: %+v, %v", fin, err)
	}
	if got, want := f.Answered(), int64(closed.Done); got < want {
		t.Errorf("the fleet answered %d commands, the relay stored %d in the window alone", got, want)
	}

	for _, rate := range []float64{200, 0} {
		fo, err := RunFanOut(ctx, FanOut{Agents: f.Agents(), Target: target, Subscribers: 5, Events: 40, Rate: rate})
		if err != nil {
			t.Fatal(err)
		}
		if fo.Delivered != 200 || fo.Missing != 0 || fo.Duplicates != 0 || len(fo.Latencies) != 200 || fo.PerSec <= 0 {
			t.Fatalf("fan-out at %v/s: %+v", rate, fmt.Sprintf("delivered %d missing %d dups %d", fo.Delivered, fo.Missing, fo.Duplicates))
		}
	}
	for _, a := range f.Agents() {
		// The ack follows the commit the subscribers were woken by.
		for end := time.Now().Add(5 * time.Second); a.Acked() != a.Emitted() && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond)
		}
		if a.Acked() != a.Emitted() {
			t.Errorf("agent %s: sent up to %d, acked %d", a.ID(), a.Emitted(), a.Acked())
		}
	}
	if lost, err := f.Lost(); lost > 0 {
		t.Fatalf("%d streams lost: %v", lost, err)
	}
}
