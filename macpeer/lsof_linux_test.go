//go:build linux

package macpeer_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/line-agent/line-agent/macpeer"
	"github.com/line-agent/line-agent/macprobe"
)

// realLsof is Linux's lsof, the same program (and -F output) as macOS's,
// so the owner lookup runs for real here. The tests skip without it.
func realLsof(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("lsof")
	if err != nil {
		t.Skip("no lsof on this machine: the real owner lookup is not exercised (the fake-lsof tests still run)")
	}
	return p
}

// dialFrom starts bash dialing ln with /dev/tcp (a real, separate
// process that holds the connection and waits reading from it: no child
// shares the socket), and returns it with the accepted end.
func dialFrom(t *testing.T, ln net.Listener) (*exec.Cmd, net.Conn) {
	t.Helper()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	cmd := exec.Command("bash", "-c", fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s || exit 9
read -r -t 10 line <&3`, host, port))
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run bash: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cmd, conn
}

// The owner lsof finds is really the process that dialed: another
// process (bash) is refused with its own pid, and this test's own dial is
// found as this process.
func TestRealLsofFindsTheDialer(t *testing.T) {
	lsof := realLsof(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()

	// bash: the real ps names it; it is not Messages.
	cmd, conn := dialFrom(t, ln)
	o := macpeer.Options{Lsof: lsof, PS: "/bin/ps", Codesign: filepath.Join(dir, "no-codesign"), Timeout: 10 * time.Second}
	re := refused(t, macpeer.New(o).Verify(context.Background(), conn))
	if re.PID != cmd.Process.Pid || re.Path != "bash" {
		t.Fatalf("found pid %d path %q, want bash's pid %d: %v", re.PID, re.Path, cmd.Process.Pid, re)
	}

	// This process: a ps that says Messages only for this pid, and a
	// codesign that vouches for it, accept it; any other pid found would
	// be refused.
	dialed, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	own, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	o.PS = writeScript(t, dir, "ps", `[ "$4" = `+strconv.Itoa(os.Getpid())+` ] && echo `+macprobe.MessagesExecutable+`; exit 0`)
	o.Codesign = writeScript(t, dir, "codesign", `[ "$1" = -d ] && [ "$3" = `+strconv.Itoa(os.Getpid())+` ] && cat >&2 <<'OUT'
`+appleDisplay+`
OUT
[ "$1" = -d ] && [ "$3" != `+strconv.Itoa(os.Getpid())+` ] && exit 1
exit 0`)
	if err := macpeer.New(o).Verify(context.Background(), own); err != nil {
		t.Fatalf("this process was not found as the dialer: %v", err)
	}
}

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}
