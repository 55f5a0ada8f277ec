// Package fakelaunchctl writes a stand-in for macOS's launchctl: a real
// executable shell script, so tests run launchctl as a subprocess on Linux
// the way the installer does on a Mac. It records every argv and keeps just
// enough state (whether the one job is loaded) to answer like launchd:
// bootout of a job that is not loaded fails with "No such process", a
// bootstrap of a job already loaded or of a missing plist fails.
package fakelaunchctl

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// script finds its state next to itself; nothing is spliced into it.
const script = `#!/bin/sh
dir=$(dirname "$0")
{ for a in "$@"; do printf '%s\t' "$a"; done; printf '\n'; } >> "$dir/calls"
case "$1" in
bootout)
  if [ -f "$dir/fail-bootout" ]; then echo "Boot-out failed: 5: Input/output error" >&2; exit 5; fi
  if [ -f "$dir/loaded" ]; then rm -f "$dir/loaded"; exit 0; fi
  echo "Boot-out failed: 3: No such process" >&2; exit 3 ;;
bootstrap)
  n=$(cat "$dir/bootstrap-failures" 2>/dev/null || echo 0)
  if [ "$n" -gt 0 ]; then
    echo $((n - 1)) > "$dir/bootstrap-failures"
    echo "Bootstrap failed: 5: Input/output error" >&2; exit 5
  fi
  if [ -f "$dir/loaded" ]; then echo "Bootstrap failed: 5: Input/output error (service already loaded)" >&2; exit 5; fi
  if [ ! -f "$3" ]; then echo "Bootstrap failed: 2: No such file or directory" >&2; exit 2; fi
  cp "$3" "$dir/loaded"; exit 0 ;;
enable) exit 0 ;;
print|kickstart)
  if [ -f "$dir/loaded" ]; then exit 0; fi
  echo "Could not find service \"$2\"" >&2; exit 113 ;;
*) echo "fake launchctl: unknown subcommand $1" >&2; exit 64 ;;
esac
`

// Fake is one fake launchctl with its own state folder.
type Fake struct {
	// Path is the script's path: what the installer is told launchctl is.
	Path string
	dir  string
}

// New writes a fake launchctl into a fresh t.TempDir().
func New(t testing.TB) *Fake {
	t.Helper()
	dir := t.TempDir()
	f := &Fake{Path: filepath.Join(dir, "launchctl"), dir: dir}
	if err := os.WriteFile(f.Path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// Calls is every argv the fake was run with (without its own path), in
// order.
func (f *Fake) Calls(t testing.TB) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		out = append(out, strings.Split(strings.TrimSuffix(line, "\t"), "\t"))
	}
	return out
}

// FailBootstrap makes the next n bootstraps fail as launchd does when the
// old job is still being removed (exit 5).
func (f *Fake) FailBootstrap(t testing.TB, n int) {
	t.Helper()
	f.write(t, "bootstrap-failures", strconv.Itoa(n)+"\n")
}

// FailBootout makes bootout fail with an error that is not "not loaded".
func (f *Fake) FailBootout(t testing.TB) { t.Helper(); f.write(t, "fail-bootout", "") }

// Loaded is the plist the fake has loaded, nil when none.
func (f *Fake) Loaded(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "loaded"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// SetLoaded makes the fake believe the job is loaded, as after an install
// by an earlier version.
func (f *Fake) SetLoaded(t testing.TB) { t.Helper(); f.write(t, "loaded", "<plist/>\n") }

func (f *Fake) write(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
