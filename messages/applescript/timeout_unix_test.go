//go:build unix

package applescript

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// alive reports whether pid still runs: a zombie (killed, not yet reaped by
// whoever inherited it) counts as dead.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		// No /proc (darwin): signal 0 succeeding means alive.
		return !errors.Is(err, os.ErrNotExist) || !procExists()
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

func procExists() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// A hung osascript is killed with everything it started once Timeout passes,
// and the failure names the last state.
func TestTimeoutKillsProcessGroup(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_HANG=1"}, func(o *Options) { o.Timeout = 700 * time.Millisecond })
	start := time.Now()
	_, err := h.exec(textTo(chatOne, "hang"))
	me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNAVAILABLE)
	if !strings.Contains(me.LastState, "osascript killed") || !strings.Contains(me.LastState, "no outgoing row") {
		t.Fatalf("last state %q", me.LastState)
	}
	if el := time.Since(start); el > 8*time.Second {
		t.Fatalf("took %s", el)
	}
	b, err := os.ReadFile(filepath.Join(h.dir, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	var parent, child int
	if _, err := fmt.Sscan(string(b), &parent, &child); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(parent) || alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("still alive: parent %t child %t", alive(parent), alive(child))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The command's own deadline passing while osascript hangs is
// DEADLINE_EXCEEDED, and the process group dies too.
func TestDeadlineWhileHungKillsGroup(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_HANG=1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	_, err := h.sender.Execute(ctx, textTo(chatOne, "hang"), func(*linev1.CommandUpdate) {})
	me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED)
	if !strings.Contains(me.LastState, "osascript running") {
		t.Fatalf("last state %q", me.LastState)
	}
	b, err := os.ReadFile(filepath.Join(h.dir, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	var parent, child int
	fmt.Sscan(string(b), &parent, &child)
	deadline := time.Now().Add(5 * time.Second)
	for alive(parent) || alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("still alive: parent %t child %t", alive(parent), alive(child))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
