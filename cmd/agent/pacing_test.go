package main

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/messages/sim"
)

// LINE_AGENT_HELPER_PACING: answers by default, fixed opens the macOS
// backend as well, and anything else stops it as a usage error (exit 2)
// naming the setting, instead of pacing some other way.
func TestHelperPacingSetting(t *testing.T) {
	dir := t.TempDir()
	st, err := sim.Create(filepath.Join(dir, "chat.db"), sim.WithLine("+15550000001"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg, err := agent.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HelperPacing != "answers" {
		t.Fatalf("default pacing %q, want answers", cfg.HelperPacing)
	}
	cfg.Driver, cfg.DataDir, cfg.ChatDB = "macos", dir, filepath.Join(dir, "chat.db")
	cfg.Lines, cfg.HelperAddr, cfg.Osascript = []string{"+15550000001"}, "127.0.0.1:0", filepath.Join(dir, "no-osascript")
	cfg.HelperPeerCheck = false
	for _, p := range []string{"answers", "fixed"} {
		cfg.HelperPacing = p
		be, err := openBackend(context.Background(), cfg, newLogger(io.Discard, "error"))
		if err != nil {
			t.Fatalf("pacing %s: %v", p, err)
		}
		_ = be.Close()
	}
	cfg.HelperPacing = "fast"
	_, err = openBackend(context.Background(), cfg, newLogger(io.Discard, "error"))
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "LINE_AGENT_HELPER_PACING") || !strings.Contains(err.Error(), `"fixed"`) {
		t.Fatalf("pacing fast: %v, want a usage error naming the setting and its values", err)
	}
}
