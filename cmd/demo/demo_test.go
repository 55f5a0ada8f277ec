package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDemoShowsTheConversationAndLeavesNothing runs the demo as `make demo`
// does, against freshly built line-agent and line-relay binaries.
func TestDemoShowsTheConversationAndLeavesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs them")
	}
	bin := t.TempDir()
	agentBin, relayBin := filepath.Join(bin, "line-agent"), filepath.Join(bin, "line-relay")
	for out, pkg := range map[string]string{agentBin: "../agent", relayBin: "../relay"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"--agent-bin", agentBin, "--relay-bin", relayBin}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	transcript := out.String()
	for _, want := range []string{
		"connected and healthy; serves +15550000001",
		"relay    demo-1: succeeded",
		"created=false, state succeeded (one message, not two)",
		`message from +15557654321: "got it: Hello from line-agent 👋"`,
		"me reacted love on",
		`to "Hello from line-agent (edited) 👋"`,
		"[effect confetti]",
		"unsent ",
		"demo-background: succeeded distributable",
		"demo-background-clear: succeeded",
		"== done:",
		"temporary directory removed.",
	} {
		if !strings.Contains(transcript, want) {
			t.Errorf("transcript lacks %q:\n%s", want, transcript)
		}
	}
	m := regexp.MustCompile(`on loopback in (\S+)`).FindStringSubmatch(transcript)
	if m == nil {
		t.Fatalf("transcript does not name its directory:\n%s", transcript)
	}
	if _, err := os.Stat(m[1]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo left %s behind (stat: %v)", m[1], err)
	}
}

func TestDemoCommandLine(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"--no-such-flag"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("bad flag: %v, want a usage error", err)
	}
	if err := run(context.Background(), []string{"extra"}, &out, &errOut); !errors.Is(err, errUsage) {
		t.Fatalf("extra argument: %v, want a usage error", err)
	}
	missing := filepath.Join(t.TempDir(), "line-relay")
	err := run(context.Background(), []string{"--relay-bin", missing, "--agent-bin", missing}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--relay-bin") {
		t.Fatalf("missing relay binary: %v, want an error naming --relay-bin", err)
	}
}
