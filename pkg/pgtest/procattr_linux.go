package pgtest

import "syscall"

// procAttr runs a child as cred (nil: this process's user) and, on Linux,
// has the kernel kill it when the test binary dies without stopping it (a
// panic, a timeout), so no postgres outlives its tests.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
}
