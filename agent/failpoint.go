//go:build !chaos || !unix

package agent

// failpoint is a crash point of the fault-injection suite; in a normal
// build it does nothing (see failpoint_chaos.go).
func failpoint(string) {}

// faultOn is an injected failure of the fault-injection suite; in a normal
// build there is none.
func faultOn(string) error { return nil }
