package main

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/macprobe"
	"github.com/line-agent/line-agent/messages/applescript"
	"github.com/line-agent/line-agent/messagesrestart"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// fromAgent is what doctor makes of the running agent's component c.
func fromAgent(t *testing.T, c *linev1.HealthComponent, fallback string) finding {
	t.Helper()
	d := &doctor{report: &linev1.HealthReport{Components: []*linev1.HealthComponent{c}}}
	f, ok := d.fromReport(c.GetName(), fallback)
	if !ok {
		t.Fatalf("no finding for %s", c.GetName())
	}
	return f
}

// A component's Fix is the fix, however many times its detail says
// "; fix: ": the detail is the rest, with the trailing "; fix: " and Fix
// cut when it ends so. Cutting the detail at its first "; fix: " would
// take the rest of the detail (and a second fix) for the fix.
func TestDoctorTakesTheFixFromTheField(t *testing.T) {
	const (
		hang     = "Messages is hanging (3 osascript runs in a row timed out) and automatic restarts are off"
		hangFix  = "quit and reopen Messages"
		probe    = "Messages is not running: nothing is sent or received until it is"
		probeFix = "open Messages (open -a Messages) and leave it open"
	)
	down := linev1.HealthStatus_HEALTH_STATUS_DOWN
	for _, c := range []struct {
		name, detail, fix string
		wantDetail        string
	}{{
		// Two checks joined, each with its fix (as messagesrestart joined
		// them before it set Fix), and Fix naming both.
		name:       "two fixes inside the detail",
		detail:     hang + "; fix: " + hangFix + "; " + probe + "; fix: " + probeFix,
		fix:        hangFix + "; then " + probeFix,
		wantDetail: hang + "; fix: " + hangFix + "; " + probe + "; fix: " + probeFix,
	}, {
		// The detail ends with "; fix: " and Fix, and says "; fix: " before.
		name:       "the trailing fix cut, the earlier kept",
		detail:     hang + "; fix: " + hangFix + "; " + probe + "; fix: " + probeFix,
		fix:        probeFix,
		wantDetail: hang + "; fix: " + hangFix + "; " + probe,
	}, {
		// What the agent sends now: every detail, then every fix.
		name:       "details then fixes",
		detail:     hang + "; " + probe + "; fix: " + hangFix + "; then " + probeFix,
		fix:        hangFix + "; then " + probeFix,
		wantDetail: hang + "; " + probe,
	}} {
		f := fromAgent(t, &linev1.HealthComponent{Name: component.Messages, Status: down, Detail: c.detail, Fix: c.fix}, "the fallback")
		if f.Status != verdictFail || f.Detail != c.wantDetail+" (from the running agent)" || f.Fix != c.fix {
			t.Errorf("%s: %s %q fix %q; want FAIL %q fix %q", c.name, f.Status, f.Detail, f.Fix, c.wantDetail, c.fix)
		}
	}
}

// An agent that predates Fix has its fix only in the detail, after the
// first "; fix: "; a component without one gets the fallback; a passing
// one no fix at all.
func TestDoctorFromAnAgentWithoutTheFixField(t *testing.T) {
	for _, c := range []struct {
		status                          linev1.HealthStatus
		detail                          string
		wantStatus, wantDetail, wantFix string
	}{
		{status: linev1.HealthStatus_HEALTH_STATUS_DOWN, detail: "Messages is not running; fix: open Messages",
			wantStatus: verdictFail, wantDetail: "Messages is not running", wantFix: "open Messages"},
		{status: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, detail: "not checked yet",
			wantStatus: verdictWarn, wantDetail: "not checked yet", wantFix: "the fallback"},
		{status: linev1.HealthStatus_HEALTH_STATUS_OK, detail: "Messages is running (pid 412)",
			wantStatus: verdictPass, wantDetail: "Messages is running (pid 412)"},
	} {
		f := fromAgent(t, &linev1.HealthComponent{Name: component.Messages, Status: c.status, Detail: c.detail}, "the fallback")
		if f.Status != c.wantStatus || f.Detail != c.wantDetail+" (from the running agent)" || f.Fix != c.wantFix {
			t.Errorf("%q: %s %q fix %q; want %s %q fix %q", c.detail, f.Status, f.Detail, f.Fix, c.wantStatus, c.wantDetail, c.wantFix)
		}
	}
}

// The messages component as the agent builds it (the Restarter over the
// probe's component) reaches doctor with both details and both fixes,
// the Restarter's first.
func TestDoctorMessagesWithTheRestartersCheck(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	r := messagesrestart.New(messagesrestart.Options{Actions: messagesrestart.Mac{}, PerHour: -1, Now: func() time.Time { return now }})
	for range 3 {
		r.OsascriptStarted()
		r.OsascriptEnded(applescript.RunTimedOut)
	}
	probe := component.Down("Messages is not running: nothing is sent or received until it is", macprobe.MessagesFix)
	base := &linev1.HealthComponent{Name: component.Messages, Status: probe.Status, Detail: probe.Text(), Fix: probe.Fix, Since: timestamppb.New(now)}
	f := fromAgent(t, r.Component(base), "the fallback")
	hang := "Messages is hanging (3 osascript runs in a row timed out, the last at 2026-03-01T09:00:00Z) and automatic restarts are off (LINE_AGENT_MESSAGES_RESTARTS_PER_HOUR=0)"
	if f.Status != verdictFail || f.Detail != hang+"; "+probe.Detail+" (from the running agent)" {
		t.Errorf("detail %s %q; want FAIL with both details", f.Status, f.Detail)
	}
	if !strings.HasPrefix(f.Fix, "quit and reopen Messages; restart the Mac") || !strings.HasSuffix(f.Fix, "; then "+macprobe.MessagesFix) {
		t.Errorf("fix %q; want the Restarter's, then the probe's", f.Fix)
	}
}

// A merged component (icloud) keeps each part's detail under its label
// and puts the parts' fixes last, in Fix and after one "; fix: ".
func TestMergeComponentsPutsTheFixesLast(t *testing.T) {
	imsg := component.Down("no iMessage account is signed in", "open Messages > Settings > iMessage and sign in")
	part := &linev1.HealthComponent{Name: component.ICloud, Status: imsg.Status, Detail: imsg.Text(), Fix: imsg.Fix, Since: timestamppb.Now()}
	cloud := &linev1.HealthComponent{Name: component.ICloud, Status: linev1.HealthStatus_HEALTH_STATUS_DOWN, Detail: "not signed in", Since: timestamppb.Now()}
	got := mergeComponents(component.ICloud, labelled{"iMessage", part}, labelled{"iCloud for chat backgrounds", cloud})
	want := "iMessage: " + imsg.Detail + " | iCloud for chat backgrounds: not signed in; fix: " + imsg.Fix
	if got.GetDetail() != want || got.GetFix() != imsg.Fix || got.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN {
		t.Fatalf("merged %s %q fix %q; want DOWN %q fix %q", got.GetStatus(), got.GetDetail(), got.GetFix(), want, imsg.Fix)
	}
	f := fromAgent(t, got, "the fallback")
	if f.Detail != "iMessage: "+imsg.Detail+" | iCloud for chat backgrounds: not signed in (from the running agent)" || f.Fix != imsg.Fix {
		t.Errorf("doctor: %q fix %q", f.Detail, f.Fix)
	}
}
