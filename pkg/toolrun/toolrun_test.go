package toolrun_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/toolrun"
)

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

// Arguments arrive as argv, one each, whatever they hold; output and the
// exit status come back; the agent's environment does not reach the child.
func TestRunArgvOutputExit(t *testing.T) {
	t.Setenv("LINE_AGENT_TOKEN", "secret-never-in-a-child")
	p := script(t, `for a in "$@"; do printf '[%s]' "$a"; done; echo; env; echo oops >&2; exit 3`)
	res, err := toolrun.Run(context.Background(), 5*time.Second, p, "a b", "$(rm -rf /)", "'")
	var ee *toolrun.ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || ee.Stderr != "oops" {
		t.Fatalf("want exit 3 with stderr, got %v", err)
	}
	out := string(res.Stdout)
	if !strings.HasPrefix(out, "[a b][$(rm -rf /)][']\n") {
		t.Fatalf("argv: %q", out)
	}
	if strings.Contains(out, "secret-never-in-a-child") {
		t.Fatal("the agent's environment reached the child")
	}
	if _, err := toolrun.Run(context.Background(), 5*time.Second, script(t, "exit 0")); err != nil {
		t.Fatal(err)
	}
}

// A program that hangs (and a child it started) is killed at the limit;
// a cancelled caller gets its own error, not a timeout.
func TestRunBounded(t *testing.T) {
	p := script(t, `sleep 30 & wait`)
	start := time.Now()
	_, err := toolrun.Run(context.Background(), 200*time.Millisecond, p)
	var te *toolrun.TimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("want a TimeoutError, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := toolrun.Run(ctx, 10*time.Second, p); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := toolrun.Run(context.Background(), time.Second, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing program ran")
	}
}
