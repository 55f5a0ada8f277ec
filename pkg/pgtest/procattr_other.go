//go:build !linux

package pgtest

import "syscall"

// procAttr runs a child as cred (nil: this process's user). Only Linux can
// tie the child's life to the test binary's; elsewhere a test binary that
// dies without stopping the cluster leaves postgres running.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}

// exited reports false: without Linux's waitid a child's early exit shows
// only as the start's readiness wait running out.
func exited(int) bool { return false }
