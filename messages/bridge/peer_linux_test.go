//go:build linux

package bridge_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/macpeer"
	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The real peer check over real loopback TCP: Linux's lsof (macOS's
// program and output format) names the process that dialed. This test
// process plays Messages (a ps and a codesign that vouch for its pid
// alone); bash, dialing the same port while the simulated helper is
// connected, is another process and is refused with its own pid and
// executable. The first helper stays connected and keeps answering.
func TestPeerCheckKeepsTheHelperRefusesAnother(t *testing.T) {
	lsof, err := exec.LookPath("lsof")
	if err != nil {
		t.Skip("no lsof on this machine: the real peer check is not exercised here (bridge and macpeer tests with fakes still run)")
	}
	bashPath, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to dial from another process")
	}
	exe, err := filepath.EvalSymlinks(bashPath) // what /proc/PID/exe will say
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	me := strconv.Itoa(os.Getpid())
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// ps: Messages for this pid, the truth (/proc) for any other.
	ps := script("ps", `if [ "$4" = `+me+` ]; then echo `+macprobe.MessagesExecutable+`; else readlink /proc/"$4"/exe; fi`)
	codesign := script("codesign", `if [ "$1" = -d ]; then [ "$3" = `+me+` ] || exit 1
printf 'Executable=%s\nIdentifier=com.apple.MobileSMS\nAuthority=Software Signing\nAuthority=Apple Code Signing Certification Authority\nAuthority=Apple Root CA\nTeamIdentifier=not set\n' `+macprobe.MessagesExecutable+` >&2
fi
exit 0`)
	v := macpeer.New(macpeer.Options{Lsof: lsof, PS: ps, Codesign: codesign, Timeout: 10 * time.Second})
	e := start(t, bridge.Options{Verifier: v}, simhelper.Options{})

	host, port, _ := net.SplitHostPort(e.b.Addr().String())
	bash := exec.Command(bashPath, "-c", fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s || exit 9
printf '{"event":"ping","message":"Helper Connected!","process":"not-messages"}\n' >&3
IFS= read -r -t 10 line <&3; rc=$?
echo "read=[$line] rc=$rc"`, host, port))
	var out bytes.Buffer
	bash.Stdout = &out
	began := time.Now()
	if err := bash.Run(); err != nil {
		t.Fatalf("bash: %v (%s)", err, out.String())
	}
	// read returns 1 at end of file with nothing read; a timeout would be
	// over 128 and take the full 10 s.
	if got := strings.TrimSpace(out.String()); got != "read=[] rc=1" || time.Since(began) > 8*time.Second {
		t.Fatalf("the other process saw %q after %v: its connection was not closed at once without a frame", got, time.Since(began))
	}
	want := fmt.Sprintf("refused 1 connection from %s (pid %d)", exe, bash.Process.Pid)
	eventually(t, "the refusal in health", func() bool { return strings.Contains(e.b.Health().GetDetail(), want) })

	h := e.b.Health()
	if !e.b.Connected() || h.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("the helper did not stay: %v", h)
	}
	if err := e.b.Typing(ctx(t), chat1, true); err != nil {
		t.Fatalf("the helper stopped answering: %v", err)
	}
	log := e.log.String()
	if !strings.Contains(log, "pid="+strconv.Itoa(bash.Process.Pid)) || !strings.Contains(log, "path="+exe) {
		t.Fatalf("the refusal was not logged with pid and path:\n%s", log)
	}
	if strings.Contains(log, "not-messages") {
		t.Fatalf("the refused process's greeting was read:\n%s", log)
	}
}
