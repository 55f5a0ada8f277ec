package agent

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// withUmask sets the usual 022 for the test, so a file left to SQLite's
// default mode shows up as 0644 whatever the environment's umask is.
func withUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
}

// checkPrivate fails unless every path exists with mode 0600.
func checkPrivate(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600: it holds message text and command payloads", filepath.Base(p), fi.Mode().Perm())
		}
	}
}

func TestJournalFilesArePrivate(t *testing.T) {
	withUmask(t)
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	if _, err := j.Begin(ctx, testCommand("m-1")); err != nil {
		t.Fatal(err)
	}
	if err := j.Commit(ctx, []*linev1.Event{{Key: "k1", MessageGuid: "k1"}}, []byte("c")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "state.db")
	checkPrivate(t, p, p+"-wal", p+"-shm")
}

// An older agent left state.db 0644: the next start makes it private.
func TestJournalMadePrivateAtOpen(t *testing.T) {
	withUmask(t)
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	p := filepath.Join(dir, "state.db")
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := j.Begin(context.Background(), testCommand("m-1")); err != nil {
		t.Fatal(err)
	}
	checkPrivate(t, p, p+"-wal", p+"-shm")
}
