// Package component is the vocabulary of the agent's health: the names of
// its components and a probe's verdict. The agent reports under these
// names, `line-agent status` and `line-agent doctor` print them, and the
// relay routes by them, so they live in one package both binaries may
// import (it depends on nothing but the protocol).
package component

import (
	"strings"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The components of a HealthReport, by name. A name is a promise to the
// relay and to operators' alerts: it never changes meaning.
const (
	// Relay is the stream to the relay.
	Relay = "relay"
	// Journal is state.db: DOWN while its writes fail.
	Journal = "journal"
	// Quota is the provider's send and new-conversation quotas.
	Quota = "quota"
	// ChatDB is the chat.db reader and its file watcher.
	ChatDB = "chatdb"
	// Helper is the private-API helper inside Messages.
	Helper = "helper"
	// Messages is Messages.app running.
	Messages = "messages"
	// Automation is the permission to control Messages with AppleScript.
	Automation = "automation"
	// ICloud is the Messages account: iMessage signed in, and iCloud for
	// chat backgrounds.
	ICloud = "icloud"
	// Disk is the free space where state.db lives.
	Disk = "disk"
	// Outbox is the age of the oldest event the relay has not acknowledged.
	Outbox = "outbox"
	// Lines compares the configured lines with the account's addresses
	// (macOS only).
	Lines = "lines"
)

// All is every component name, in the order a report lists them.
var All = []string{Relay, Journal, Quota, ChatDB, Helper, Messages, Automation, ICloud, Disk, Outbox, Lines}

// Check is one look at one thing: how it stands, what is wrong (or what
// was seen), and what an operator does about it. Fix is empty when there
// is nothing to do.
type Check struct {
	Status linev1.HealthStatus
	Detail string
	Fix    string
}

// OK is a Check of something that works.
func OK(detail string) Check {
	return Check{Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: detail}
}

// Degraded is a Check that still works, with a weakness and its fix.
func Degraded(detail, fix string) Check {
	return Check{Status: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, Detail: detail, Fix: fix}
}

// Down is a Check that does not work, with its fix.
func Down(detail, fix string) Check {
	return Check{Status: linev1.HealthStatus_HEALTH_STATUS_DOWN, Detail: detail, Fix: fix}
}

// fixSep joins a Check's detail and fix in Text.
const fixSep = "; fix: "

// Text is the Check as one line for a HealthComponent's detail: what is
// wrong, then the fix, so the relay's and status's readers see both.
func (c Check) Text() string {
	if c.Fix == "" {
		return c.Detail
	}
	return c.Detail + fixSep + c.Fix
}

// Joined is several checks as one HealthComponent's detail and fix: the
// parts' details joined by sep, then every part's fix, in order, joined by
// "; then ", after one "; fix: " as Text puts it. So a reader that cuts a
// detail at its first "; fix: " still gets every detail and every fix,
// and fix (the field) is the same fixes alone. A part without a detail or
// without a fix adds none.
func Joined(sep string, parts ...Check) (detail, fix string) {
	var details, fixes []string
	for _, p := range parts {
		if p.Detail != "" {
			details = append(details, p.Detail)
		}
		if p.Fix != "" {
			fixes = append(fixes, p.Fix)
		}
	}
	fix = strings.Join(fixes, "; then ")
	return Check{Detail: strings.Join(details, sep), Fix: fix}.Text(), fix
}

// Reported is the Check a HealthComponent carries: its status, its fix
// (the fix field) and its detail without the fix Text ended it with. A
// component from an agent that predates the fix field has it only inside
// the detail; legacy then cuts it at the first "; fix: " (for such an
// agent no detail held two).
func Reported(hc *linev1.HealthComponent, legacy bool) Check {
	c := Check{Status: hc.GetStatus(), Detail: hc.GetDetail(), Fix: hc.GetFix()}
	switch {
	case c.Fix != "":
		c.Detail = strings.TrimSuffix(c.Detail, fixSep+c.Fix)
	case legacy:
		c.Detail, c.Fix, _ = strings.Cut(c.Detail, fixSep)
	}
	return c
}

// Worse is the worse of two checks (DOWN over DEGRADED over OK); on a tie
// the first.
func Worse(a, b Check) Check {
	if b.Status > a.Status {
		return b
	}
	return a
}
