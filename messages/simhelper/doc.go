// Package simhelper is a simulated private-API helper: it dials the agent's
// bridge exactly as the helper inside Messages does and answers each action
// by calling a Messages implementation, so the bridge, the driver and the
// agent run end to end on Linux and in CI.
//
// It decodes the wire protocol on its own, from docs/bridge.md, instead of
// sharing the bridge's types: a drift between the two sides then fails the
// tests instead of passing silently.
//
// By default it is a line-agent-aware helper (answers line-agent-hello,
// supports chat backgrounds and emoji tapbacks, frames input by lines).
// Options.Base turns it into a plain BlueBubbles helper, and the fault
// options make it slow, failing, silent or disconnecting.
package simhelper
