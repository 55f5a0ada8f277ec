package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	for _, c := range []struct {
		f    Format
		out  Output
		want Format
	}{
		{Auto, Output{Terminal: true}, Text},
		{Auto, Output{}, JSON},
		{Auto, Output{Terminal: true, Launchd: true}, JSON},
		{Auto, Output{Launchd: true}, JSON},
		{Text, Output{}, Text},
		{Text, Output{Launchd: true}, Text},
		{JSON, Output{Terminal: true}, JSON},
	} {
		if got := c.f.Resolve(c.out); got != c.want {
			t.Errorf("%s.Resolve(%+v) = %s, want %s", c.f, c.out, got, c.want)
		}
	}
}

func TestParseRefusesUnknownValues(t *testing.T) {
	for s, want := range map[string]Format{"": Auto, "JSON": JSON, " text ": Text, "auto": Auto} {
		if f, err := ParseFormat(s); err != nil || f != want {
			t.Errorf("ParseFormat(%q) = %s, %v; want %s", s, f, err, want)
		}
	}
	_, err := ParseFormat("jsonl")
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "want text, json or auto") {
		t.Errorf("ParseFormat(jsonl) = %v, want ErrFormat listing the valid ones", err)
	}
	if l, err := ParseLevel("WARN"); err != nil || l != slog.LevelWarn {
		t.Errorf("ParseLevel(WARN) = %v, %v", l, err)
	}
	if l, err := ParseLevel(""); err != nil || l != slog.LevelInfo {
		t.Errorf("ParseLevel(\"\") = %v, %v", l, err)
	}
	if _, err := ParseLevel("warning"); !errors.Is(err, ErrLevel) {
		t.Errorf("ParseLevel(warning) = %v, want ErrLevel", err)
	}
}

// lines decodes JSON log lines.
func lines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestCommandFromContextOnce(t *testing.T) {
	var b bytes.Buffer
	log := New(&b, Options{Format: JSON, Level: slog.LevelDebug})
	ctx := WithCommand(context.Background(), "cmd-1")
	log.InfoContext(ctx, "from the context")
	log.InfoContext(ctx, "named on the line", CommandKey, "cmd-2")
	log.With(CommandKey, "cmd-3").InfoContext(ctx, "named by the logger")
	log.With("component", "confirm").WarnContext(ctx, "through a component's logger", "err", "boom")
	log.Info("no context")
	log.InfoContext(context.Background(), "a context without a command")
	got := lines(t, &b)
	want := []string{"cmd-1", "cmd-2", "cmd-3", "cmd-1", "", ""}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), b.String())
	}
	for i, m := range got {
		id, _ := m[CommandKey].(string)
		if id != want[i] {
			t.Errorf("line %d (%s): command %q, want %q", i, m["msg"], id, want[i])
		}
	}
	// One key, never two: a text line would show command= twice.
	if n := strings.Count(b.String(), `"command"`); n != 4 {
		t.Errorf("%d command keys in the output, want 4:\n%s", n, b.String())
	}
	if got[3]["component"] != "confirm" || got[3]["level"] != "WARN" || got[3]["time"] == nil {
		t.Errorf("line 3 lost its fields: %v", got[3])
	}
}

func TestTextFormatAndLevel(t *testing.T) {
	var b bytes.Buffer
	log := New(&b, Options{Format: Text, Level: slog.LevelWarn})
	ctx := WithCommand(context.Background(), "cmd-9")
	log.InfoContext(ctx, "below the level")
	log.WarnContext(ctx, "kept")
	out := b.String()
	if strings.Contains(out, "below the level") || !strings.Contains(out, "level=WARN msg=kept command=cmd-9") {
		t.Errorf("text output:\n%s", out)
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) || IsTerminal(&bytes.Buffer{}) {
		t.Error("a regular file or a buffer taken for a terminal")
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if !IsTerminal(null) {
		t.Error("a character device (/dev/null) not taken for one")
	}
}
