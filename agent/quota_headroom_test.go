package agent

import (
	"testing"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The typed headroom is what the relay places pool users by: per served
// line in its one spelling, the new conversations left to that line and
// the sends left to the agent, -1 without a limit, from the same reading
// as the component's text.
func TestQuotaHealthTypedHeadroom(t *testing.T) {
	clk := newTestClock()
	j := openTestJournal(t, t.TempDir())
	const other = "+15550000002"
	q := NewQuotas(j, QuotaOptions{Limits: QuotaLimits{Sends: 10, NewConversations: 3}, Now: clk.now, Lines: []string{testLine, "+1 (555) 000-0002"}})
	mustAllow(t, q, sendTo("a", testLine, "+15557654321"))
	mustAllow(t, q, sendTo("b", testLine, "+15557654322"))
	mustAllow(t, q, sendTo("c", testLine, "+15557654321")) // a reply: a send, no new conversation

	hc, hr := q.Health()
	if hc.GetName() != "quota" || hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("component %v", hc)
	}
	want := map[string][2]int32{testLine: {1, 7}, other: {3, 7}}
	if len(hr) != len(want) {
		t.Fatalf("headroom %v, want one entry per line", hr)
	}
	for _, h := range hr {
		w, ok := want[h.GetLine()]
		if !ok || h.GetNewConversationsLeft() != w[0] || h.GetSendsLeft() != w[1] {
			t.Fatalf("headroom of %q: %d new conversations, %d sends left; want %v", h.GetLine(), h.GetNewConversationsLeft(), h.GetSendsLeft(), w)
		}
	}

	mustAllow(t, q, sendTo("d", testLine, "+15557654323"))
	if _, hr := q.Health(); hr[0].GetNewConversationsLeft() != 0 {
		t.Fatalf("after the last new conversation: %v, want 0 left", hr[0])
	}

	unlimited := NewQuotas(j, QuotaOptions{Now: clk.now, Lines: []string{testLine}})
	if _, hr := unlimited.Health(); len(hr) != 1 || hr[0].GetNewConversationsLeft() != -1 || hr[0].GetSendsLeft() != -1 {
		t.Fatalf("without limits: %v, want -1 (no limit) for both", hr)
	}
}
