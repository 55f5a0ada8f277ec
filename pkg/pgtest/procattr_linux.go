package pgtest

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// procAttr runs a child as cred (nil: this process's user) and, on Linux,
// has the kernel kill it when the test binary dies without stopping it (a
// panic, a timeout), so no postgres outlives its tests.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
}

// exited reports whether the child pid has exited, without reaping it (the
// later Wait does).
func exited(pid int) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	return err == nil && info.Signo != 0
}
