package agent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// testClock is a clock a test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func openTestJournal(t *testing.T, dir string) *Journal {
	t.Helper()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// sendTo is a send_text to participants (handles) or, with a ";" in
// target, to a chat GUID.
func sendTo(id, line, target string) *linev1.Command {
	c := &linev1.Command{Id: id, Line: line, Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi"}}}
	if strings.Contains(target, ";") {
		c.Target = &linev1.Command_ChatGuid{ChatGuid: target}
	} else {
		c.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: strings.Split(target, ",")}}
	}
	return c
}

func createChat(id string, first string, handles ...string) *linev1.Command {
	return &linev1.Command{Id: id, Line: testLine, Kind: &linev1.Command_CreateChat{CreateChat: &linev1.CreateChat{Participants: handles, FirstMessage: first}}}
}

func mustAllow(t *testing.T, q *Quotas, cmd *linev1.Command) {
	t.Helper()
	if err := q.Reserve(context.Background(), cmd); err != nil {
		t.Fatalf("%s refused: %v", cmd.GetId(), err)
	}
}

func mustRefuse(t *testing.T, q *Quotas, cmd *linev1.Command, retryAt time.Time) *command.Error {
	t.Helper()
	err := q.Reserve(context.Background(), cmd)
	if err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED {
		t.Fatalf("%s: %v, want QUOTA_EXCEEDED", cmd.GetId(), err)
	}
	if !err.RetryAt.Equal(retryAt) {
		t.Fatalf("%s: a slot frees at %v, want %v", cmd.GetId(), err.RetryAt, retryAt)
	}
	return err
}

func headroom(t *testing.T, q *Quotas) Headroom {
	t.Helper()
	h, err := q.Headroom(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// The 5,000th send of a day is allowed and the next refused, with the time
// the oldest send leaves the window; the window then rolls send by send.
func TestQuotaSendsLimitAndRollingWindow(t *testing.T) {
	clk := newTestClock()
	t0 := clk.now()
	q := NewQuotas(openTestJournal(t, t.TempDir()), QuotaOptions{Limits: QuotaLimits{Sends: 5000}, Now: clk.now, Lines: []string{testLine}})
	// 4,998 at t0, from many runners at once (their writes share commits).
	var wg sync.WaitGroup
	var refused atomic.Int32
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 4998; i += 32 {
				if err := q.Reserve(context.Background(), sendTo(fmt.Sprint("s-", i), testLine, "iMessage;-;+15557654321")); err != nil {
					refused.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Fatalf("%d of the first 4,998 sends refused", n)
	}
	clk.set(t0.Add(time.Hour))
	mustAllow(t, q, sendTo("s-4999", testLine, "iMessage;-;+15557654321"))
	clk.set(t0.Add(2 * time.Hour))
	mustAllow(t, q, sendTo("s-5000", testLine, "iMessage;-;+15557654321"))
	if h := headroom(t, q); h.Sent != 5000 || h.SendsLeft != 0 {
		t.Fatalf("headroom %+v, want 5000 sent, none left", h)
	}
	clk.set(t0.Add(3 * time.Hour))
	err := mustRefuse(t, q, sendTo("s-5001", testLine, "iMessage;-;+15557654321"), t0.Add(QuotaWindow))
	if err.RetryAfter != 21*time.Hour || !strings.Contains(err.Msg, "limit is 5000") {
		t.Fatalf("refusal %v (retry after %v), want the limit and 21h", err, err.RetryAfter)
	}
	// A nanosecond before the 4,998 leave the window: still full.
	clk.set(t0.Add(QuotaWindow - time.Nanosecond))
	mustRefuse(t, q, sendTo("s-5001", testLine, "iMessage;-;+15557654321"), t0.Add(QuotaWindow))
	clk.set(t0.Add(QuotaWindow))
	mustAllow(t, q, sendTo("s-5001", testLine, "iMessage;-;+15557654321"))
	if h := headroom(t, q); h.Sent != 3 || h.SendsLeft != 4997 {
		t.Fatalf("after the window rolled: %+v, want 3 sent, 4997 left", h)
	}
}

// Slots free one at a time, each exactly a window after the send that
// took it; what is not a message is never counted.
func TestQuotaSlotsFreeAsTheWindowRolls(t *testing.T) {
	clk := newTestClock()
	t0 := clk.now()
	q := NewQuotas(openTestJournal(t, t.TempDir()), QuotaOptions{Limits: QuotaLimits{Sends: 2}, Now: clk.now})
	mustAllow(t, q, sendTo("a", testLine, "+15557654321"))
	clk.set(t0.Add(time.Hour))
	mustAllow(t, q, sendTo("b", testLine, "+15557654321"))
	for _, notSent := range []*linev1.Command{
		{Id: "tapback", Line: testLine, Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"}, Kind: &linev1.Command_React{React: &linev1.React{}}},
		{Id: "typing", Line: testLine, Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"}, Kind: &linev1.Command_Typing{Typing: &linev1.Typing{}}},
		createChat("empty-chat", "", "+15557654321", "+15557654322"),
	} {
		mustAllow(t, q, notSent)
	}
	clk.set(t0.Add(2 * time.Hour))
	mustRefuse(t, q, sendTo("c", testLine, "+15557654321"), t0.Add(QuotaWindow))
	clk.set(t0.Add(QuotaWindow))
	mustAllow(t, q, sendTo("c", testLine, "+15557654321"))
	mustRefuse(t, q, sendTo("d", testLine, "+15557654321"), t0.Add(time.Hour+QuotaWindow))
}

// Counts live in state.db: a reopened journal keeps them, and an id
// counted before the restart is not counted again.
func TestQuotaRestartKeepsCountsAndCountsAnIDOnce(t *testing.T) {
	clk := newTestClock()
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	limits := QuotaLimits{Sends: 2, NewConversations: 1}
	q := NewQuotas(j, QuotaOptions{Limits: limits, Now: clk.now, Lines: []string{testLine}})
	mustAllow(t, q, sendTo("a", testLine, "+15557654321"))
	mustAllow(t, q, sendTo("a", testLine, "+15557654321")) // the same id again
	if h := headroom(t, q); h.Sent != 1 || h.NewConversations[testLine] != 1 {
		t.Fatalf("one id counted as %+v", h)
	}
	j.Close()

	q = NewQuotas(openTestJournal(t, dir), QuotaOptions{Limits: limits, Now: clk.now, Lines: []string{testLine}})
	if h := headroom(t, q); h.Sent != 1 || h.SendsLeft != 1 || h.NewConversationsLeft[testLine] != 0 {
		t.Fatalf("after a restart: %+v, want 1 sent, 1 left, no new conversation left", h)
	}
	mustAllow(t, q, sendTo("a", testLine, "+15557654321")) // a redelivery after the restart
	mustAllow(t, q, sendTo("b", testLine, "+15557654321")) // the same person: not new
	mustRefuse(t, q, sendTo("c", testLine, "+15557654321"), clk.now().Add(QuotaWindow))
}

// A new conversation is a first message to a handle this line never
// messaged and who never wrote to it, judged from chat.db and from the
// commands the journal counted; a group counts each new member, all or
// nothing; each line has its own count.
func TestQuotaNewConversationsFromChatDBAndJournal(t *testing.T) {
	ctx := context.Background()
	clk := newTestClock()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithLine(testLine))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const (
		wrote  = "+15557650001" // we messaged them before
		theirs = "+15557650002" // they wrote to us
		silent = "+15557650003" // in a group of ours, never messaged
	)
	dm, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{wrote}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Insert(ctx, sim.Msg{Chat: dm.GUID, FromMe: true, Text: "earlier", Sent: true}); err != nil {
		t.Fatal(err)
	}
	in, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{theirs}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Insert(ctx, sim.Msg{Chat: in.GUID, Text: "hello?"}); err != nil {
		t.Fatal(err)
	}
	group, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{wrote, silent}, DisplayName: "g"})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := chatdb.Open(path, chatdb.Options{Line: testLine, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	const otherLine = "+15550000002"
	q := NewQuotas(openTestJournal(t, t.TempDir()), QuotaOptions{Limits: QuotaLimits{NewConversations: 2}, Now: clk.now,
		Conversations: rd, Lines: []string{testLine, otherLine}})

	mustAllow(t, q, sendTo("to-wrote", testLine, wrote))
	mustAllow(t, q, sendTo("to-theirs", testLine, "iMessage;-;"+theirs))
	if h := headroom(t, q); h.NewConversations[testLine] != 0 {
		t.Fatalf("replies counted as new conversations: %+v", h)
	}
	mustAllow(t, q, sendTo("to-new", testLine, "(555) 765-9001"))
	mustAllow(t, q, sendTo("to-new-again", testLine, "+15557659001")) // the journal knows them now
	if h := headroom(t, q); h.NewConversations[testLine] != 1 {
		t.Fatalf("new conversations %+v, want 1", h)
	}
	// Two new members, one slot: the whole group is refused.
	clk.set(clk.now().Add(time.Minute))
	qerr := mustRefuse(t, q, createChat("group-2", "welcome", wrote, "+15557659002", "+15557659003"), clk.now().Add(-time.Minute).Add(QuotaWindow))
	if !strings.Contains(qerr.Msg, "would start 2") {
		t.Fatalf("refusal %q does not say how many", qerr.Msg)
	}
	if err := q.Reserve(ctx, createChat("group-3", "welcome", "+15557659002", "+15557659003", "+15557659004")); err == nil || !err.RetryAt.IsZero() {
		t.Fatalf("three new at once with a limit of 2: %v, want a refusal that no wait cures", err)
	}
	// A send to a group chat GUID: its members come from chat.db.
	mustAllow(t, q, sendTo("to-group", testLine, group.GUID))
	if h := headroom(t, q); h.NewConversations[testLine] != 2 || h.NewConversationsLeft[testLine] != 0 {
		t.Fatalf("after the group send: %+v, want the silent member counted", h)
	}
	mustRefuse(t, q, sendTo("to-new-4", testLine, "+15557659004"), clk.now().Add(-time.Minute).Add(QuotaWindow))
	mustAllow(t, q, sendTo("other-line", otherLine, "+15557659004"))
	if h := headroom(t, q); h.NewConversations[otherLine] != 1 {
		t.Fatalf("the other line: %+v", h)
	}
}

// Runners racing for the last slot are decided one after the other in the
// journal's writer: exactly one gets it, for sends and for new
// conversations.
func TestQuotaRaceForTheLastSlot(t *testing.T) {
	for _, c := range []struct {
		name   string
		limits QuotaLimits
		target func(i int) string
	}{
		{"sends", QuotaLimits{Sends: 1}, func(int) string { return "+15557654321" }},
		{"new conversations", QuotaLimits{NewConversations: 1}, func(i int) string { return fmt.Sprintf("+1555765%04d", i) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := NewQuotas(openTestJournal(t, t.TempDir()), QuotaOptions{Limits: c.limits, Now: newTestClock().now})
			var wg sync.WaitGroup
			var won, lost atomic.Int32
			for i := range 24 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					switch err := q.Reserve(context.Background(), sendTo(fmt.Sprint("r-", i), testLine, c.target(i))); {
					case err == nil:
						won.Add(1)
					case err.Code == linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED:
						lost.Add(1)
					default:
						t.Errorf("r-%d: %v", i, err)
					}
				}()
			}
			wg.Wait()
			if won.Load() != 1 || lost.Load() != 23 {
				t.Fatalf("%d won and %d lost the last slot; want 1 and 23", won.Load(), lost.Load())
			}
		})
	}
}

// Health shows the headroom, DEGRADED when a line may start no new
// conversation, DOWN when nothing may be sent.
func TestQuotaHealthShowsHeadroom(t *testing.T) {
	clk := newTestClock()
	q := NewQuotas(openTestJournal(t, t.TempDir()), QuotaOptions{Limits: QuotaLimits{Sends: 3, NewConversations: 1}, Now: clk.now, Lines: []string{testLine}})
	hc := q.Component()
	if hc.GetName() != "quota" || hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_OK ||
		!strings.Contains(hc.GetDetail(), "sends in 24h: 0 of 3, 3 left") || !strings.Contains(hc.GetDetail(), testLine+": 0 of 1, 1 left") {
		t.Fatalf("fresh quota health %v", hc)
	}
	mustAllow(t, q, sendTo("a", testLine, "+15557654321"))
	if hc := q.Component(); hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(hc.GetDetail(), "1 of 3, 2 left") {
		t.Fatalf("no new conversation left: %v, want DEGRADED with the sends left", hc)
	}
	mustAllow(t, q, sendTo("b", testLine, "+15557654321"))
	mustAllow(t, q, sendTo("c", testLine, "+15557654321"))
	if hc := q.Component(); hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || !hc.GetSince().AsTime().Equal(clk.now()) {
		t.Fatalf("no sends left: %v, want DOWN since the last send", hc)
	}
	clk.set(clk.now().Add(QuotaWindow))
	if hc := q.Component(); hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("a window later: %v, want OK", hc)
	}
	unlimited := NewQuotas(q.j, QuotaOptions{Now: clk.now, Lines: []string{testLine}})
	if hc := unlimited.Component(); hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_OK || !strings.Contains(hc.GetDetail(), "no limit") {
		t.Fatalf("without limits: %v", hc)
	}
}
