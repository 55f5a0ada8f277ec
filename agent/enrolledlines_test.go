package agent

import (
	"context"
	"io"
	"slices"
	"testing"
)

// Enrollment keeps the lines it enrolled for, and `run` serves them when
// the configuration names none (the LaunchAgent passes no lines); lines
// configured win, and a directory not enrolled is left alone.
func TestEnrolledLinesServeWhenNoneAreConfigured(t *testing.T) {
	t.Parallel()
	r := startLoggedRelay(t, t.TempDir(), "127.0.0.1:0", io.Discard)
	tok, err := r.CreateProjectToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	lines := []string{"+15550000001", "+15550000002"}
	if _, err := Enroll(context.Background(), EnrollOptions{DialOptions: DialOptions{Addr: r.GRPCAddr(), CAFile: r.CAFile()}, Token: tok, DataDir: dataDir, Lines: lines}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: dataDir}
	EnrolledLines(&cfg)
	if !slices.Equal(cfg.Lines, lines) {
		t.Fatalf("lines %v; want the enrolled %v", cfg.Lines, lines)
	}
	cfg = Config{DataDir: dataDir, Lines: []string{"+15550000009"}}
	EnrolledLines(&cfg)
	if !slices.Equal(cfg.Lines, []string{"+15550000009"}) {
		t.Fatalf("configured lines replaced: %v", cfg.Lines)
	}
	cfg = Config{DataDir: t.TempDir()}
	EnrolledLines(&cfg)
	if cfg.Lines != nil {
		t.Fatalf("lines %v from a directory not enrolled", cfg.Lines)
	}
}
