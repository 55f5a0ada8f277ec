//go:build !chaos || !unix

package agent

import "database/sql"

// failpoint is a crash point of the fault-injection suite; in a normal
// build it does nothing (see failpoint_chaos.go).
func failpoint(string) {}

// faulty is a journal write as it is: a normal build injects no write
// failure (see failpoint_chaos.go), and adds nothing to the write path.
func faulty(apply func(*sql.Tx) error) func(*sql.Tx) error { return apply }
