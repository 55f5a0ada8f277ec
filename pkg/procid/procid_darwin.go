package procid

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// zombie is SZOMB of <sys/proc.h>: exited, not yet reaped.
const zombie = 5

// startOf asks the kernel (sysctl kern.proc.pid) when pid started, to the
// microsecond; a zombie is gone: it can no longer act.
func startOf(pid int) (string, error) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	// An unknown pid answers an empty record, which x/sys reports as EIO.
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EIO) {
		return "", fmt.Errorf("%w: pid %d", ErrGone, pid)
	}
	if err != nil {
		return "", fmt.Errorf("procid: sysctl kern.proc.pid.%d: %w", pid, err)
	}
	if int(kp.Proc.P_pid) != pid {
		return "", fmt.Errorf("%w: pid %d", ErrGone, pid)
	}
	if kp.Proc.P_stat == zombie {
		return "", fmt.Errorf("%w: pid %d has exited", ErrGone, pid)
	}
	t := kp.Proc.P_starttime
	return strconv.FormatInt(int64(t.Sec), 10) + "." + strconv.FormatInt(int64(t.Usec), 10), nil
}
