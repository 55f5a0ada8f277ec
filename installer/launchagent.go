// Package installer writes what macOS needs to run line-agent as a
// LaunchAgent in the logged-in user's session (Messages and AppleScript need
// the Aqua session, so a LaunchDaemon would not do). Later issues add
// install/uninstall through launchctl and the package build; the plist is
// generated here so it can be tested on any machine.
package installer

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"path/filepath"
)

// Label is the LaunchAgent's label and plist file name.
const Label = "dev.line-agent.agent"

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

// Plist renders the LaunchAgent property list. Values are XML-escaped, never
// spliced: a path with "<" or "&" stays a path. The token never appears here:
// the agent reads its credentials from the data directory.
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
	args := []string{l.Binary, "run", "--data", l.DataDir, "--driver", driver}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString("<plist version=\"1.0\">\n<dict>\n")
	key := func(k string) { fmt.Fprintf(&b, "  <key>%s</key>\n", k) }
	str := func(v string) {
		b.WriteString("  <string>")
		_ = xml.EscapeText(&b, []byte(v))
		b.WriteString("</string>\n")
	}
	key("Label")
	str(Label)
	key("ProgramArguments")
	b.WriteString("  <array>\n")
	for _, a := range args {
		b.WriteString("  ")
		str(a)
	}
	b.WriteString("  </array>\n")
	key("RunAtLoad")
	b.WriteString("  <true/>\n")
	// Restart after a crash, but not after a clean exit (an operator's stop).
	key("KeepAlive")
	b.WriteString("  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n")
	key("ProcessType")
	str("Interactive")
	// The staged shutdown needs time: first SIGTERM drains.
	key("ExitTimeOut")
	b.WriteString("  <integer>30</integer>\n")
	key("StandardOutPath")
	str(filepath.Join(l.LogDir, "stdout.log"))
	key("StandardErrorPath")
	str(filepath.Join(l.LogDir, "stderr.log"))
	b.WriteString("</dict>\n</plist>\n")
	return b.Bytes(), nil
}
