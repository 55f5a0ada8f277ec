// Package installer installs line-agent as a LaunchAgent in the logged-in
// user's session (Messages and AppleScript need the Aqua session, so a
// LaunchDaemon would not do) and removes it again. It renders the plist,
// writes it atomically and loads it through launchctl, run as a subprocess
// with argv only; the launchctl binary is a path, so the tests run it all
// on Linux against a fake launchctl script.
package installer

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"howett.net/plist"
)

// Label is the LaunchAgent's label and plist file name.
const Label = "dev.line-agent.agent"

// LogFormatEnv and LogFormatJSON are what the plist sets in the job's
// environment: under launchd the agent's output goes to files that log
// shippers read, so it logs JSON lines there instead of text.
const (
	LogFormatEnv  = "LINE_AGENT_LOG_FORMAT"
	LogFormatJSON = "json"
)

// Timings launchd applies to the job (seconds).
const (
	// ThrottleInterval is the least time between two starts: a job that
	// fails at once (relay revoked it, Full Disk Access missing) is
	// restarted every 10 s, not in a tight loop, and its log grows slowly.
	ThrottleInterval = 10
	// ExitTimeOut is how long launchd waits after SIGTERM before SIGKILL.
	// The agent's staged shutdown takes up to SHUTDOWN_GRACE (20 s) for
	// in-flight commands, then at most 5 s for the stream to close after
	// its Goodbye; launchd's default of 20 s would cut the drain short.
	ExitTimeOut = 30
)

// LaunchAgent describes the job.
type LaunchAgent struct {
	// Binary is the absolute path of line-agent.
	Binary string
	// DataDir is passed as --data.
	DataDir string
	// LogDir receives stdout.log and stderr.log.
	LogDir string
	// Driver is passed as --driver (default macos).
	Driver string
}

// ErrRelativePath rejects relative paths: launchd runs jobs from /, so a
// relative path would point somewhere else.
var ErrRelativePath = errors.New("installer: paths must be absolute")

// StdoutPath is where launchd sends the job's standard output (the agent
// writes little there: its log goes to standard error).
func (l LaunchAgent) StdoutPath() string { return filepath.Join(l.LogDir, "stdout.log") }

// StderrPath is where the agent's log lines land (it logs to stderr).
func (l LaunchAgent) StderrPath() string { return filepath.Join(l.LogDir, "stderr.log") }

// Plist renders the LaunchAgent property list. Values are XML-escaped, never
// spliced: a path with "<" or "&" stays a path. No secret appears here: the
// agent reads its credentials from the data directory.
func (l LaunchAgent) Plist() ([]byte, error) {
	for _, p := range []string{l.Binary, l.DataDir, l.LogDir} {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("%w: %q", ErrRelativePath, p)
		}
	}
	driver := l.Driver
	if driver == "" {
		driver = "macos"
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString("<plist version=\"1.0\">\n<dict>\n")
	key := func(indent, k string) {
		b.WriteString(indent + "<key>")
		_ = xml.EscapeText(&b, []byte(k))
		b.WriteString("</key>\n")
	}
	str := func(indent, v string) {
		b.WriteString(indent + "<string>")
		_ = xml.EscapeText(&b, []byte(v))
		b.WriteString("</string>\n")
	}
	integer := func(indent string, n int) { b.WriteString(indent + "<integer>" + strconv.Itoa(n) + "</integer>\n") }

	key("  ", "Label")
	str("  ", Label)
	key("  ", "ProgramArguments")
	b.WriteString("  <array>\n")
	for _, a := range []string{l.Binary, "run", "--data", l.DataDir, "--driver", driver} {
		str("    ", a)
	}
	b.WriteString("  </array>\n")
	key("  ", "RunAtLoad")
	b.WriteString("  <true/>\n")
	// Restart after a crash (a signal, a panic, any non-zero exit), but not
	// after a clean exit. The agent exits 0 only when it was asked to stop
	// (SIGTERM: it drains and says Goodbye), so an operator's
	// `launchctl kill TERM` stays stopped until `launchctl kickstart` or the
	// next login. KeepAlive true would start it again at once, leaving
	// bootout as the only way to stop it.
	key("  ", "KeepAlive")
	b.WriteString("  <dict>\n")
	key("    ", "SuccessfulExit")
	b.WriteString("    <false/>\n  </dict>\n")
	key("  ", "ThrottleInterval")
	integer("  ", ThrottleInterval)
	// Only in the user's GUI session: Messages and AppleScript need it.
	key("  ", "LimitLoadToSessionType")
	str("  ", "Aqua")
	// Interactive: launchd does not apply background resource limits (CPU
	// and I/O throttling, timer coalescing), which would delay sends and
	// chat.db reads by seconds.
	key("  ", "ProcessType")
	str("  ", "Interactive")
	key("  ", "ExitTimeOut")
	integer("  ", ExitTimeOut)
	key("  ", "StandardOutPath")
	str("  ", l.StdoutPath())
	key("  ", "StandardErrorPath")
	str("  ", l.StderrPath())
	key("  ", "EnvironmentVariables")
	b.WriteString("  <dict>\n")
	key("    ", LogFormatEnv)
	str("    ", LogFormatJSON)
	b.WriteString("  </dict>\n")
	b.WriteString("</dict>\n</plist>\n")
	return b.Bytes(), nil
}

// programArguments reads ProgramArguments back from a plist this package
// (or a hand edit of it) wrote.
func programArguments(b []byte) ([]string, error) {
	var p struct {
		ProgramArguments []string `plist:"ProgramArguments"`
	}
	if _, err := plist.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return p.ProgramArguments, nil
}
