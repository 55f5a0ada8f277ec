// Package macpeer decides whether the process at the other end of a
// loopback TCP connection is Messages, so that the private-API bridge,
// whose protocol has no authentication, talks only to the helper loaded
// into Messages and not to any local process that dials its port.
//
// macOS offers no pure-Go way to name a socket's owner (proc_pidfdinfo
// needs libproc, that is cgo; the net.inet.tcp.pcblist sysctls return
// undocumented structures that change between macOS versions), so the
// lookup runs
// the Mac's own programs, by argv, each with a time limit: lsof names the
// processes holding the connection's other end, ps their executable, and
// codesign the executable's signature. Any doubt refuses: a program that
// fails or hangs, no owner found, several owners of which one is not
// Messages, a signature that is not Apple's own for com.apple.MobileSMS.
package macpeer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/pkg/toolrun"
)

// Defaults for Options: where macOS keeps the programs, and what Messages
// is.
const (
	DefaultLsof     = "/usr/sbin/lsof"
	DefaultPS       = "/bin/ps"
	DefaultCodesign = "/usr/bin/codesign"
	// MessagesIdentifier is Messages' code signing identifier (its bundle
	// id).
	MessagesIdentifier = "com.apple.MobileSMS"
	// DefaultTimeout bounds each program run. codesign --deep hashes the
	// whole Messages bundle, which takes a few seconds at most.
	DefaultTimeout = 10 * time.Second
)

// The first and last certificates of the chain Apple signs its own
// programs with, as codesign names them ("Authority=" lines): an
// Apple-made program, not a Developer ID one.
const (
	appleLeaf = "Software Signing"
	appleRoot = "Apple Root CA"
)

// Options configure a Verifier. Every program's path is configurable so
// that off a Mac the check runs against fake programs.
type Options struct {
	// Lsof names the connection's owners; default DefaultLsof.
	Lsof string
	// PS names an owner's executable; default DefaultPS.
	PS string
	// Codesign reads and verifies the signature; default DefaultCodesign.
	Codesign string
	// Executable is the one executable accepted; default
	// macprobe.MessagesExecutable (the helper is a bundle loaded into
	// Messages, so its connection belongs to Messages' process).
	Executable string
	// Identifier is the signing identifier required; default
	// MessagesIdentifier.
	Identifier string
	// Timeout bounds each program run; default DefaultTimeout.
	Timeout time.Duration
}

// RefusedError is a connection whose peer is not, or could not be shown
// to be, Messages. PID and Path name what was found (0 and "" when the
// lookup did not get that far), for the log and the helper's health; the
// bridge reads them through PeerProcess.
type RefusedError struct {
	PID    int
	Path   string
	Reason string
	Err    error
}

func (e *RefusedError) Error() string {
	who := "an unidentified process"
	switch {
	case e.Path != "":
		who = fmt.Sprintf("%s (pid %d)", e.Path, e.PID)
	case e.PID > 0:
		who = fmt.Sprintf("pid %d", e.PID)
	}
	msg := fmt.Sprintf("helper connection from %s refused: %s", who, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *RefusedError) Unwrap() error { return e.Err }

// PeerProcess names the refused process for the bridge's log and health.
func (e *RefusedError) PeerProcess() (pid int, path string) { return e.PID, e.Path }

// Verifier is the macOS peer check (bridge.PeerVerifier). It keeps no
// state: each connection is looked up afresh, because a pid and even a
// path say nothing about the next connection.
type Verifier struct {
	o Options
}

// New returns a Verifier with o's defaults filled in.
func New(o Options) *Verifier {
	if o.Lsof == "" {
		o.Lsof = DefaultLsof
	}
	if o.PS == "" {
		o.PS = DefaultPS
	}
	if o.Codesign == "" {
		o.Codesign = DefaultCodesign
	}
	if o.Executable == "" {
		o.Executable = macprobe.MessagesExecutable
	}
	if o.Identifier == "" {
		o.Identifier = MessagesIdentifier
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	return &Verifier{o: o}
}

// Verify returns nil when every process holding conn's other end is
// Messages signed by Apple, and a *RefusedError otherwise. It reads and
// writes nothing on conn.
func (v *Verifier) Verify(ctx context.Context, conn net.Conn) error {
	local, lok := conn.LocalAddr().(*net.TCPAddr)
	remote, rok := conn.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok || !remote.IP.IsLoopback() {
		return &RefusedError{Reason: "not a loopback TCP connection (" + conn.RemoteAddr().String() + ")"}
	}
	pids, err := v.owners(ctx, local, remote)
	if err != nil {
		return &RefusedError{Reason: "lsof could not name the process that connected", Err: err}
	}
	if len(pids) == 0 {
		return &RefusedError{Reason: "no process of this user holds the connection's other end (lsof found none)"}
	}
	for _, pid := range pids {
		if err := v.verifyProcess(ctx, pid); err != nil {
			return err
		}
	}
	return nil
}

// verifyProcess checks one owner: its executable, then that executable's
// signature as the running process and as the bundle on disk.
func (v *Verifier) verifyProcess(ctx context.Context, pid int) error {
	path, err := v.executable(ctx, pid)
	if err != nil {
		return &RefusedError{PID: pid, Reason: "ps could not name its executable", Err: err}
	}
	if path != v.o.Executable {
		return &RefusedError{PID: pid, Path: path, Reason: "it is not Messages (" + v.o.Executable + ")"}
	}
	sig, err := v.signature(ctx, pid)
	if err != nil {
		return &RefusedError{PID: pid, Path: path, Reason: "codesign could not read its signature", Err: err}
	}
	if why := sig.notMessages(path, v.o.Identifier); why != "" {
		return &RefusedError{PID: pid, Path: path, Reason: why}
	}
	if err := v.verifyBundle(ctx, bundleOf(path)); err != nil {
		return &RefusedError{PID: pid, Path: path, Reason: "its bundle's signature does not verify as Apple's " + v.o.Identifier, Err: err}
	}
	return nil
}

// owners are the pids holding a TCP socket whose own end is remote and
// whose other end is local: the process that dialed. lsof also lists the
// agent's end of the same connection (local -> remote), which is not it.
//
//	lsof -nP -iTCP@127.0.0.1:PEERPORT -sTCP:ESTABLISHED -Fpn
//
// prints "p<pid>" for each process and "n<local>-><remote>" for each of its
// sockets. Exit status 1 with nothing printed is "none".
func (v *Verifier) owners(ctx context.Context, local, remote *net.TCPAddr) ([]int, error) {
	res, err := toolrun.Run(ctx, v.o.Timeout, v.o.Lsof, "-nP", "-iTCP@"+remote.String(), "-sTCP:ESTABLISHED", "-Fpn")
	var ee *toolrun.ExitError
	if errors.As(err, &ee) && ee.Code == 1 && len(strings.TrimSpace(string(res.Stdout))) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseLsof(res.Stdout, remote.String()+"->"+local.String()), nil
}

// parseLsof returns the pids whose socket is named want, in order, once.
func parseLsof(out []byte, want string) []int {
	var pids []int
	cur := 0
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "p"):
			cur, _ = strconv.Atoi(line[1:])
		case strings.HasPrefix(line, "n") && line[1:] == want && cur > 0 && !slices.Contains(pids, cur):
			pids = append(pids, cur)
		}
	}
	return pids
}

// executable is pid's executable as `ps -o comm= -p PID` prints it (the
// full path, on macOS).
func (v *Verifier) executable(ctx context.Context, pid int) (string, error) {
	res, err := toolrun.Run(ctx, v.o.Timeout, v.o.PS, "-o", "comm=", "-p", strconv.Itoa(pid))
	if err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(res.Stdout)), "\n")
	if first = strings.TrimSpace(first); first == "" {
		return "", errors.New("ps printed nothing (the process is gone)")
	}
	return first, nil
}

// signature is what `codesign -d --verbose=4 PID` says of the running
// process (on standard error): the executable the kernel ran, its
// identifier and its certificate chain.
type signature struct {
	executable, identifier, team string
	authorities                  []string
}

func (v *Verifier) signature(ctx context.Context, pid int) (signature, error) {
	res, err := toolrun.Run(ctx, v.o.Timeout, v.o.Codesign, "-d", "--verbose=4", strconv.Itoa(pid))
	if err != nil {
		return signature{}, err
	}
	var s signature
	for _, line := range strings.Split(string(res.Stderr)+"\n"+string(res.Stdout), "\n") {
		k, val, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "Executable":
			s.executable = val
		case "Identifier":
			s.identifier = val
		case "TeamIdentifier":
			s.team = val
		case "Authority":
			s.authorities = append(s.authorities, val)
		}
	}
	return s, nil
}

// notMessages says why s is not Apple's Messages at path, "" when it is.
// The executable codesign names for the pid is the kernel's, so it also
// catches a process that rewrote what ps shows.
func (s signature) notMessages(path, identifier string) string {
	switch {
	case s.executable != path:
		return fmt.Sprintf("codesign says the process runs %q, not %q", s.executable, path)
	case s.identifier != identifier:
		return fmt.Sprintf("its signing identifier is %q, not %q", s.identifier, identifier)
	case len(s.authorities) == 0 || s.authorities[0] != appleLeaf || !slices.Contains(s.authorities, appleRoot):
		return fmt.Sprintf("it is not signed by Apple (authorities %q, team %q)", s.authorities, s.team)
	}
	return ""
}

// verifyBundle checks the bundle on disk against Apple's requirement for
// Messages: intact (--deep --strict) and signed by Apple itself ("anchor
// apple", which a Developer ID signature does not meet) with the
// identifier. The requirement is a constant: nothing of anyone's is in
// it.
//
//	codesign --verify --deep --strict -R=identifier "com.apple.MobileSMS" and anchor apple BUNDLE
func (v *Verifier) verifyBundle(ctx context.Context, bundle string) error {
	req := fmt.Sprintf("-R=identifier %q and anchor apple", v.o.Identifier)
	_, err := toolrun.Run(ctx, v.o.Timeout, v.o.Codesign, "--verify", "--deep", "--strict", req, bundle)
	return err
}

// bundleOf is the .app bundle an executable lives in
// (/System/Applications/Messages.app for Messages), or the executable
// itself when it is not in one.
func bundleOf(path string) string {
	if i := strings.LastIndex(path, ".app/Contents/MacOS/"); i >= 0 {
		return path[:i+len(".app")]
	}
	return path
}
