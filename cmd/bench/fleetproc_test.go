package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/fleetload"
	"github.com/line-agent/line-agent/relay"
)

// TestMain lets the test binary be its own fleet child, as the bench
// binary is.
func TestMain(m *testing.M) {
	if fleetChild() {
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFleetProc runs a small fleet in a child process against a real
// relay: its lines come back with their relay, its agents answer commands
// submitted here, it counts them when asked, and it ends with no stream
// lost; a refused enrollment is an error at start, not a fleet.
func TestFleetProc(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fl := fleetload.NewFinishLog()
	srv, err := relay.New(relay.Options{DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: slog.New(fl)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		t.Fatal(err)
	}
	defer srv.Close()
	tok, err := srv.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	target := fleetload.Target{GRPCAddr: srv.GRPCAddr(), CAFile: srv.CAFile(), HTTPAddr: srv.HTTPAddr()}

	const n = 3
	fp, err := startFleetProc(ctx, []fleetload.Target{target}, n, tok)
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	lines := fp.Lines()
	seen := map[string]bool{}
	for _, l := range lines {
		if l.Target != target || !strings.HasPrefix(l.Number, "+1") || seen[l.Number] {
			t.Errorf("line %+v: want a distinct +1 number on %+v", l, target)
		}
		seen[l.Number] = true
	}
	if len(lines) != n {
		t.Fatalf("%d lines, want %d", len(lines), n)
	}
	before, err := fp.Answered()
	if err != nil || before != 0 {
		t.Fatalf("answered before any command: %d, %v", before, err)
	}
	r, err := fleetload.Run(ctx, fleetload.Load{Lines: lines, Results: fl, Clients: 2, Rate: 20, Duration: 500 * time.Millisecond, IDPrefix: "fp-"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Latencies) == 0 || r.Failed+r.TimedOut+r.Refused > 0 {
		t.Fatalf("commands to the child's agents: %+v", r)
	}
	after, err := fp.Answered()
	if err != nil || after < int64(len(r.Latencies)) {
		t.Fatalf("the child answered %d (%v); the relay stored %d results", after, err, len(r.Latencies))
	}
	if lost, err := fp.Close(); lost != 0 || err != nil {
		t.Fatalf("Close: %d lost, %v", lost, err)
	}
	if lost, err := fp.Close(); lost != 0 || err != nil {
		t.Fatalf("second Close: %d lost, %v", lost, err)
	}

	if _, err := startFleetProc(ctx, []fleetload.Target{target}, 1, "not-a-token"); err == nil || !strings.Contains(err.Error(), "did not get ready") {
		t.Fatalf("a fleet with a refused token: %v", err)
	}
}

// TestFleetProcLateAnswer: an answer that comes after its question gave
// up is not taken for the next question's, which would skew the CPU per
// command of the row that asked.
func TestFleetProcLateAnswer(t *testing.T) {
	var asked strings.Builder
	p := &fleetProc{stdin: nopCloser{&asked}, reports: make(chan childReport, 2), asked: 1}
	late, now := int64(5), int64(7)
	p.reports <- childReport{Answered: &late, Question: 1}
	p.reports <- childReport{Answered: &now, Question: 2}
	n, err := p.Answered()
	if err != nil || n != now {
		t.Fatalf("Answered = %d, %v; want %d (the late answer to question 1 dropped)", n, err, now)
	}
	if asked.String() != "answered 2\n" {
		t.Fatalf("asked %q, want question 2", asked.String())
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
