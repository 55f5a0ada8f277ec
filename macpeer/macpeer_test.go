package macpeer_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/macpeer"
	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/pkg/toolrun"
)

const messagesPid = "4242"

// appleDisplay is what codesign -d --verbose=4 prints (on standard error)
// for Messages on macOS 15, trimmed.
const appleDisplay = `Executable=/System/Applications/Messages.app/Contents/MacOS/Messages
Identifier=com.apple.MobileSMS
Format=app bundle with Mach-O universal (x86_64 arm64e)
CodeDirectory v=20400 size=2012 flags=0x0(none) hashes=52+7 location=embedded
Platform identifier=16
Signature size=4442
Authority=Software Signing
Authority=Apple Code Signing Certification Authority
Authority=Apple Root CA
Signed Time=Sep 14, 2024 at 07:12:44
Info.plist entries=41
TeamIdentifier=not set
Sealed Resources version=2 rules=2 files=1211
Internal requirements count=1 size=68`

// pair is a real loopback TCP connection: the accepted end (what the
// bridge verifies) and the dialing end.
func pair(t *testing.T) (accepted, dialed net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = accepted.Close(); _ = dialed.Close() })
	return accepted, dialed
}

// tools are fake lsof, ps and codesign scripts answering for one
// connection; every run appends its argv to argvLog.
type tools struct {
	dir, argvLog string
	// lsof's standard output (and exit status), ps's answer for 4242,
	// codesign's display and --verify exit status.
	lsof, lsofExit, path, display, verifyExit string
	// hang makes that program sleep instead of answering.
	hang string
}

func (tl tools) write(t *testing.T) macpeer.Options {
	t.Helper()
	script := func(name, body string) string {
		p := filepath.Join(tl.dir, name)
		if tl.hang == name {
			body = "sleep 30"
		}
		head := `echo "` + name + ` $*" >> ` + tl.argvLog + "\n"
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+head+body+"\n"), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return macpeer.Options{
		Lsof: script("lsof", "cat <<'OUT'\n"+tl.lsof+"\nOUT\nexit "+orZero(tl.lsofExit)),
		PS:   script("ps", `[ "$4" = `+messagesPid+` ] && echo "`+tl.path+`"; [ "$4" = 777 ] && echo /usr/bin/python3; exit 0`),
		Codesign: script("codesign", `if [ "$1" = -d ]; then cat >&2 <<'OUT'
`+tl.display+`
OUT
exit 0; fi
exit `+orZero(tl.verifyExit)),
		Timeout: 2 * time.Second,
	}
}

func orZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}

func newTools(t *testing.T, accepted net.Conn) tools {
	dir := t.TempDir()
	name := accepted.RemoteAddr().String() + "->" + accepted.LocalAddr().String()
	back := accepted.LocalAddr().String() + "->" + accepted.RemoteAddr().String()
	return tools{
		dir: dir, argvLog: filepath.Join(dir, "argv"),
		// The agent's own end is listed too (as lsof does): it is not the peer.
		lsof:    "p" + messagesPid + "\nf7\nn" + name + "\np1\nf3\nn" + back,
		path:    macprobe.MessagesExecutable,
		display: appleDisplay,
	}
}

func refused(t *testing.T, err error) *macpeer.RefusedError {
	t.Helper()
	var re *macpeer.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("want a RefusedError, got %v", err)
	}
	return re
}

// Messages at its path, signed by Apple, is accepted, and each program is
// run with exactly the fixed argv the check documents.
func TestAcceptsMessages(t *testing.T) {
	accepted, _ := pair(t)
	tl := newTools(t, accepted)
	o := tl.write(t)
	if err := macpeer.New(o).Verify(context.Background(), accepted); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(tl.argvLog)
	want := strings.Join([]string{
		"lsof -nP -iTCP@" + accepted.RemoteAddr().String() + " -sTCP:ESTABLISHED -Fpn",
		"ps -o comm= -p 4242",
		"codesign -d --verbose=4 4242",
		`codesign --verify --deep --strict -R=identifier "com.apple.MobileSMS" and anchor apple /System/Applications/Messages.app`,
	}, "\n") + "\n"
	if string(b) != want {
		t.Fatalf("argv:\n%s\nwant:\n%s", b, want)
	}
}

// Everything that is not Messages signed by Apple, or cannot be shown to
// be, is refused, with the pid and path found so far.
func TestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		change     func(*tools)
		pid        int
		path, says string
	}{
		{"another program", func(tl *tools) { tl.path = "/usr/bin/python3" }, 4242, "/usr/bin/python3", "not Messages"},
		{"a copy of Messages elsewhere", func(tl *tools) { tl.path = "/tmp/Messages.app/Contents/MacOS/Messages" }, 4242, "/tmp/Messages.app/Contents/MacOS/Messages", "not Messages"},
		{"ps rewritten by the process", func(tl *tools) {
			tl.display = strings.Replace(appleDisplay, "Executable=/System/Applications/Messages.app/Contents/MacOS/Messages", "Executable=/Users/x/evil", 1)
		}, 4242, macprobe.MessagesExecutable, "/Users/x/evil"},
		{"a Developer ID signature", func(tl *tools) {
			tl.display = strings.NewReplacer("Authority=Software Signing", "Authority=Developer ID Application: Someone (ABCDE12345)",
				"Authority=Apple Code Signing Certification Authority", "Authority=Developer ID Certification Authority",
				"TeamIdentifier=not set", "TeamIdentifier=ABCDE12345").Replace(appleDisplay)
		}, 4242, macprobe.MessagesExecutable, "not signed by Apple"},
		{"no signature", func(tl *tools) {
			tl.display = "Executable=" + macprobe.MessagesExecutable + "\ncode object is not signed at all"
		}, 4242, macprobe.MessagesExecutable, "identifier"},
		{"another identifier", func(tl *tools) {
			tl.display = strings.Replace(appleDisplay, "com.apple.MobileSMS", "com.example.fake", 1)
		}, 4242, macprobe.MessagesExecutable, "com.example.fake"},
		{"the bundle fails verification", func(tl *tools) { tl.verifyExit = "3" }, 4242, macprobe.MessagesExecutable, "does not verify"},
		{"a second owner that is not Messages", func(tl *tools) { tl.lsof += "\np777\nn" + strings.SplitN(tl.lsof, "\n", 4)[2][1:] }, 777, "/usr/bin/python3", "not Messages"},
		{"no owner found", func(tl *tools) { tl.lsof, tl.lsofExit = "", "1" }, 0, "", "found none"},
		{"lsof failing", func(tl *tools) { tl.lsofExit = "2" }, 0, "", "lsof"},
		{"the process gone before ps", func(tl *tools) { tl.path = "" }, 4242, "", "ps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			accepted, _ := pair(t)
			tl := newTools(t, accepted)
			tc.change(&tl)
			re := refused(t, macpeer.New(tl.write(t)).Verify(context.Background(), accepted))
			if re.PID != tc.pid || re.Path != tc.path || !strings.Contains(re.Error(), tc.says) {
				t.Fatalf("got pid %d path %q: %v; want pid %d path %q saying %q", re.PID, re.Path, re, tc.pid, tc.path, tc.says)
			}
			if pid, path := re.PeerProcess(); pid != tc.pid || path != tc.path {
				t.Fatalf("PeerProcess %d %q", pid, path)
			}
		})
	}
}

// A program that hangs refuses the connection within its time limit (fail
// closed), whichever of the three it is.
func TestHangingToolRefuses(t *testing.T) {
	for _, name := range []string{"lsof", "ps", "codesign"} {
		t.Run(name, func(t *testing.T) {
			accepted, _ := pair(t)
			tl := newTools(t, accepted)
			tl.hang = name
			o := tl.write(t)
			o.Timeout = 300 * time.Millisecond
			start := time.Now()
			err := macpeer.New(o).Verify(context.Background(), accepted)
			refused(t, err)
			var te *toolrun.TimeoutError
			if !errors.As(err, &te) {
				t.Fatalf("want the timeout inside, got %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

// A connection that is not loopback TCP is refused without running
// anything.
func TestNotTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	dir := t.TempDir()
	o := macpeer.Options{Lsof: filepath.Join(dir, "none"), PS: filepath.Join(dir, "none"), Codesign: filepath.Join(dir, "none")}
	if re := refused(t, macpeer.New(o).Verify(context.Background(), a)); !strings.Contains(re.Error(), "not a loopback TCP") {
		t.Fatal(re)
	}
}
