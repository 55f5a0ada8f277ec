package main

import (
	"testing"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// One line, three spellings (issue 9): the relay and the agent apply one
// rule (command.NormalizeLine), so each reaches the agent serving
// +15550000001 and is sent from it; before, "+1 555-000-0001" sat queued
// until its deadline.
func TestLineSpellingsReachTheSameAgent(t *testing.T) {
	h := startE2E(t, simSetup{})
	for _, line := range []string{"+15550000001", "+1 555-000-0001", "(555) 000-0001", "555.000.0001"} {
		c := cmd(e2ePeer, &linev1.SendText{Text: "from " + line})
		c.Line = line
		if snap := h.ok(c); snap.GetMessageGuid() == "" {
			t.Fatalf("%q: no message guid", line)
		}
	}
}
