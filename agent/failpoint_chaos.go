//go:build chaos && unix

package agent

import (
	"database/sql"
	"errors"
	"os"
	"strings"
	"syscall"
	"time"
)

// failpoint kills this process with SIGKILL the first time the agent
// passes the point named by LINE_AGENT_FAILPOINT, so the fault-injection
// suite (chaos/) can crash the agent at an exact step of a command, not
// only at random moments. "NAME@DURATION" kills that long after passing
// NAME instead (in the middle of what follows). LINE_AGENT_FAILPOINT_MARKER
// names a file written when the point fires; while it exists the point is
// off, so the restarted agent runs on. Only binaries built with -tags
// chaos have this; failpoint.go makes it nothing otherwise.
func failpoint(name string) {
	want := os.Getenv("LINE_AGENT_FAILPOINT")
	point, after, _ := strings.Cut(want, "@")
	if point != name {
		return
	}
	if marker := os.Getenv("LINE_AGENT_FAILPOINT_MARKER"); marker != "" {
		f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return // fired already (or unwritable: then never)
		}
		f.Close()
	}
	kill := func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	if d, err := time.ParseDuration(after); err == nil && d > 0 {
		time.AfterFunc(d, kill)
		return
	}
	kill()
}

// errInjected is the failure faultOn injects.
var errInjected = errors.New("injected fault (chaos build)")

// faultOn returns an error while the file named by
// LINE_AGENT_FAULT_<NAME> exists ("journal-write" reads
// LINE_AGENT_FAULT_JOURNAL_WRITE), so the suite can turn a failure of that
// step on and off from outside: state.db refusing writes, say.
func faultOn(name string) error {
	path := os.Getenv("LINE_AGENT_FAULT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")))
	if path == "" {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	return errInjected
}

// faulty is apply, failing first while the suite has the journal's writes
// failing (faultOn "journal-write").
func faulty(apply func(*sql.Tx) error) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		if err := faultOn("journal-write"); err != nil {
			return err
		}
		return apply(tx)
	}
}
