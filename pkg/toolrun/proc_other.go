//go:build !unix

package toolrun

import "os/exec"

// setProcessGroup does nothing where there are no process groups (the
// agent targets darwin, and linux for tests).
func setProcessGroup(*exec.Cmd) {}

// killProcessGroup kills the child alone.
func killProcessGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return cmd.Process.Kill()
}
