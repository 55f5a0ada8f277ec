// Package bridge is the agent's side of the private-API helper: the dylib
// loaded into Messages that reaches IMCore for what AppleScript cannot do
// (typing, tapbacks, effects, replies, edits, unsends, read marks, group
// names, availability look-ups and, with a line-agent-aware helper, chat
// backgrounds).
//
// It speaks the wire protocol of the open-source BlueBubbles helper so that
// the helper already deployed on many Macs works unchanged: the agent
// listens on loopback, the helper dials in, and both exchange newline-
// delimited JSON. Requests carry a transactionId that the helper's answer
// repeats; events ("started-typing", ...) carry none. A line-agent-aware
// helper also answers a "line-agent-hello" request with the actions and
// features it supports; a BlueBubbles helper ignores it, and the bridge then
// assumes the BlueBubbles base set. docs/bridge.md is the full description.
//
// Bridge owns the socket and the transactions; Driver turns relay commands
// into bridge calls and implements messages.Driver.
package bridge
