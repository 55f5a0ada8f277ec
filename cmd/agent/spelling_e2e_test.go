package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"

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

// The same malformed handle gets the same typed error whether the private-
// API helper is connected or not: it is refused at the first door it
// reaches (the relay's submit here, the agent's dispatcher for a command
// from another relay), with command.Check's one rule, before any driver.
func TestMalformedHandleSameErrorWithAndWithoutHelper(t *testing.T) {
	errorFor := func(setup simSetup, handle string) (string, string) {
		h := startE2E(t, setup)
		c := cmd(handle, &linev1.SendText{Text: "x"})
		if _, err := h.relay.SubmitCommand(context.Background(), c); err != nil {
			var me *command.Error
			if !errors.As(err, &me) {
				t.Fatalf("%q: %v", handle, err)
			}
			return command.CodeName(me.Code), me.Msg
		}
		v := h.final(c.Id, 10*time.Second)
		if v.State != "failed" || v.Error == nil {
			t.Fatalf("%q: %s %+v", handle, v.State, v.Error)
		}
		return v.Error.Code, v.Error.Message
	}
	for _, handle := range []string{"+1555abc", "someone@", "+0123456789"} {
		withCode, withMsg := errorFor(simSetup{}, handle)
		withoutCode, withoutMsg := errorFor(simSetup{NoHelper: true}, handle)
		if withCode != "INVALID_ARGUMENT" || withCode != withoutCode || withMsg != withoutMsg {
			t.Errorf("%q: with the helper %s %q, without %s %q", handle, withCode, withMsg, withoutCode, withoutMsg)
		}
	}
}
