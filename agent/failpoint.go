//go:build !chaos || !unix

package agent

// failpoint is a crash point of the fault-injection suite; in a normal
// build it does nothing (see failpoint_chaos.go).
func failpoint(string) {}
