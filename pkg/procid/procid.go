// Package procid names a process so that a later process can tell whether
// it is still alive: a pid alone is not enough, because the kernel hands
// the number to someone else once the process is gone. The agent notes the
// osascript child of a send this way before feeding it its script, and
// after a crash asks whether that child can still make Messages act.
package procid

import (
	"errors"
	"fmt"
)

// ID is one process: its pid and the kernel's record of when it started,
// in a spelling that only has to compare equal for the same process.
type ID struct {
	Pid   int    `json:"pid"`
	Start string `json:"start"`
}

// ErrGone is returned (wrapped) for a pid no running process has.
var ErrGone = errors.New("procid: no such process")

// ErrUnsupported is returned where this operating system's process table
// cannot be read: whether a process lives cannot be told.
var ErrUnsupported = errors.New("procid: process start times are not readable on this system")

// Of names the running process pid: ErrGone when there is none (or only
// its zombie).
func Of(pid int) (ID, error) {
	if pid <= 0 {
		return ID{}, fmt.Errorf("%w: pid %d", ErrGone, pid)
	}
	start, err := startOf(pid)
	if err != nil {
		return ID{}, err
	}
	return ID{Pid: pid, Start: start}, nil
}

// Alive reports whether the process id names still runs. A pid now held
// by another process (a different start) is not alive. The error is
// ErrUnsupported where that cannot be told, or a failure reading the
// process table; alive is then false and means nothing.
func Alive(id ID) (bool, error) {
	now, err := Of(id.Pid)
	switch {
	case errors.Is(err, ErrGone):
		return false, nil
	case err != nil:
		return false, err
	}
	return now.Start == id.Start, nil
}
