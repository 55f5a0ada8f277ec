package installer

import (
	"errors"
	"strings"
	"testing"

	"howett.net/plist"
)

func TestPlistParsesAndKeepsValuesIntact(t *testing.T) {
	l := LaunchAgent{Binary: "/opt/line agent/bin/line-agent", DataDir: "/Users/a&b/<data>", LogDir: "/tmp/logs"}
	b, err := l.Plist()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Label            string   `plist:"Label"`
		ProgramArguments []string `plist:"ProgramArguments"`
		RunAtLoad        bool     `plist:"RunAtLoad"`
		KeepAlive        struct {
			SuccessfulExit bool `plist:"SuccessfulExit"`
		} `plist:"KeepAlive"`
		StandardErrorPath string `plist:"StandardErrorPath"`
	}
	if _, err := plist.Unmarshal(b, &got); err != nil {
		t.Fatalf("plist does not parse: %v\n%s", err, b)
	}
	want := []string{"/opt/line agent/bin/line-agent", "run", "--data", "/Users/a&b/<data>", "--driver", "macos"}
	if strings.Join(got.ProgramArguments, "|") != strings.Join(want, "|") {
		t.Fatalf("ProgramArguments = %q, want %q", got.ProgramArguments, want)
	}
	if got.Label != Label || !got.RunAtLoad || got.KeepAlive.SuccessfulExit || got.StandardErrorPath != "/tmp/logs/stderr.log" {
		t.Fatalf("unexpected plist: %+v", got)
	}
}

func TestPlistRejectsRelativePaths(t *testing.T) {
	_, err := LaunchAgent{Binary: "line-agent", DataDir: "/d", LogDir: "/l"}.Plist()
	if !errors.Is(err, ErrRelativePath) {
		t.Fatalf("err = %v, want ErrRelativePath", err)
	}
}
