//go:build !chaos

package main

import "github.com/line-agent/line-agent/messages/simhelper"

// chaosHelper is a fault of the fault-injection suite; a normal build has
// none (see fault_chaos.go).
func chaosHelper(*simhelper.Options) {}
