//go:build !linux

package pgtest

import "syscall"

// procAttr runs a child as cred (nil: this process's user). Only Linux can
// tie the child's life to the test binary's; elsewhere a test binary that
// dies without stopping the cluster leaves postgres running.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
