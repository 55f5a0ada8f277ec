//go:build !unix

package applescript

import "os/exec"

// setProcessGroup is a no-op where there are no process groups; the agent
// only targets darwin (and linux for tests), so this exists to keep the
// package building elsewhere.
func setProcessGroup(cmd *exec.Cmd) {}

// killProcessGroup kills just the child where groups do not exist.
func killProcessGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return cmd.Process.Kill()
}
