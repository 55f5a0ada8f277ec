//go:build chaos

package main

import (
	"os"
	"strconv"

	"github.com/line-agent/line-agent/messages/simhelper"
)

// chaosHelper lets the fault-injection suite (chaos/) make the simulated
// private-API helper crash mid-transaction: with
// LINE_AGENT_FAULT_HELPER_DROP_EVERY=N it acts on every Nth request, then
// drops the connection instead of answering. Only binaries built with
// -tags chaos have it; fault.go makes it nothing otherwise.
func chaosHelper(o *simhelper.Options) {
	if n, err := strconv.Atoi(os.Getenv("LINE_AGENT_FAULT_HELPER_DROP_EVERY")); err == nil && n > 0 {
		o.DropAfterActingEvery = n
	}
}
