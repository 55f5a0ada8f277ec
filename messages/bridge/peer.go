package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// DefaultVerifyTimeout bounds one peer check: a verifier that hangs
// (a program that never answers) refuses the connection when it passes.
const DefaultVerifyTimeout = 30 * time.Second

// PeerVerifier decides whether the process that connected to the helper
// port may speak for Messages. The helper protocol has no
// authentication, so on a Mac any local process of the user (or of
// another user) could otherwise dial the port and be handed every
// command. Verify must read and write nothing on conn and return nil
// only for the helper's process; any error refuses the connection. An
// error with a method PeerProcess() (pid int, path string), such as
// macpeer's, names the process in the log and in Health. The macOS
// implementation is macpeer.Verifier; the simulated backend runs without
// one (its helper is this process's own goroutine).
type PeerVerifier interface {
	Verify(ctx context.Context, conn net.Conn) error
}

// peerProcess is a verifier's error that names the refused process.
type peerProcess interface {
	PeerProcess() (pid int, path string)
}

// AddrError is a helper address Listen refuses: malformed, or not
// loopback. The caller shows it as a configuration error
// (LINE_AGENT_HELPER_ADDR).
type AddrError struct {
	Addr   string
	Reason string
	Err    error
}

func (e *AddrError) Error() string {
	msg := fmt.Sprintf("helper address %q: %s", e.Addr, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *AddrError) Unwrap() error { return e.Err }

// checkAddr splits addr and refuses anything but a loopback IP or
// "localhost": the helper port must never be reachable from the network.
func checkAddr(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", &AddrError{Addr: addr, Reason: "not host:port", Err: err}
	}
	if host == "localhost" {
		return host, port, nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", "", &AddrError{Addr: addr, Reason: "only a loopback address (127.0.0.1, ::1 or localhost) is allowed: the helper protocol has no authentication"}
	}
	return host, port, nil
}

// admit decides, before anything is read or written on nc, whether it may
// become the helper connection: it must come from loopback and pass the
// verifier. A refused connection is closed at once, logged with the pid
// and path the verifier found, and counted for Health. The check runs on
// the accept loop, so connections are verified one at a time: a flood of
// them costs one program run at a time, each bounded.
func (b *Bridge) admit(nc net.Conn) bool {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		b.log.Warn("refusing a non-loopback helper connection", "remote", nc.RemoteAddr().String())
		_ = nc.Close()
		return false
	}
	v := b.opts.Verifier
	if v == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.VerifyTimeout)
	defer cancel()
	err := v.Verify(ctx, nc)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err() // a verifier that gave up must not admit
	}
	if err == nil {
		return true
	}
	defer nc.Close()
	if b.ctx.Err() != nil {
		return false // shutting down: not a refusal
	}
	// Counted before the close, so that Health shows the refusal by the
	// time the refused process sees its connection end.
	pid, path := 0, ""
	var pp peerProcess
	if errors.As(err, &pp) {
		pid, path = pp.PeerProcess()
	}
	b.refused.add(pid, path)
	b.log.Warn("refused a helper connection: not the private-API helper inside Messages",
		"remote", nc.RemoteAddr().String(), "pid", pid, "path", path, "err", err)
	return false
}

// maxRefusedPaths bounds how many executables the refusal count tells
// apart; more are counted together.
const maxRefusedPaths = 8

// refusals counts refused helper connections by executable, for Health.
type refusals struct {
	mu     sync.Mutex
	byPath map[string]*refusal // guarded by mu
	order  []string            // guarded by mu; first refusal first
	other  int                 // guarded by mu; refusals past maxRefusedPaths
}

// refusal is the count for one executable and its latest pid.
type refusal struct {
	n, pid int
}

func (r *refusals) add(pid int, path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.byPath[path]; e != nil {
		e.n++
		e.pid = pid
		return
	}
	if len(r.order) >= maxRefusedPaths {
		r.other++
		return
	}
	if r.byPath == nil {
		r.byPath = map[string]*refusal{}
	}
	r.byPath[path] = &refusal{n: 1, pid: pid}
	r.order = append(r.order, path)
}

// describe is "" with no refusal, else "refused 2 connections from
// /usr/bin/python3 (pid 4242), 1 from an unidentified process".
func (r *refusals) describe() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.order) == 0 {
		return ""
	}
	parts := make([]string, 0, len(r.order)+1)
	for i, path := range r.order {
		e := r.byPath[path]
		n := fmt.Sprint(e.n)
		if i == 0 {
			n = "refused " + n + " connection"
			if e.n > 1 {
				n += "s"
			}
		}
		who := "an unidentified process"
		switch {
		case path != "":
			who = fmt.Sprintf("%s (pid %d)", path, e.pid)
		case e.pid > 0:
			who = fmt.Sprintf("an unnamed process (pid %d)", e.pid)
		}
		parts = append(parts, n+" from "+who)
	}
	if r.other > 0 {
		parts = append(parts, fmt.Sprintf("%d from other processes", r.other))
	}
	return strings.Join(parts, ", ") + " (not the helper inside Messages)"
}

// Unanswered is how many requests in a row the helper has left without
// an answer (0 after any answer): the signal that Messages, where the
// helper runs, hangs. Health turns DEGRADED at 3; the agent's Messages
// restarter reads it too.
func (b *Bridge) Unanswered() int64 { return b.stats.unanswered.Load() }
