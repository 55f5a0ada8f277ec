package relay

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// poolHarness is a relay with one test agent per line of a pool token,
// each answering every command it gets with success, and an SDK client.
type poolHarness struct {
	t       *testing.T
	srv     *Server
	agents  map[string]*testAgent
	api     *apiClient
	tokenID string
	users   int
	reports atomic.Int64
}

func startPoolHarness(t *testing.T, lines ...string) *poolHarness {
	t.Helper()
	h := &poolHarness{t: t, srv: startRelay(t, "", Options{}), agents: map[string]*testAgent{}}
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); wg.Wait() })
	for _, l := range lines {
		a := enrollAgent(t, h.srv, l)
		a.connect()
		h.agents[l] = a
		ts := a.cur
		wg.Go(func() {
			for {
				select {
				case f := <-ts.commands:
					cmd := f.GetCommand()
					snap := &linev1.Snapshot{MessageGuid: cmd.GetId(), Sent: true, Date: when}
					if cmd.GetCreateChat() != nil {
						snap.ChatGuid = "iMessage;+;chat" + cmd.GetId()[len(cmd.GetId())-6:]
					}
					_ = ts.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{
						CommandId: cmd.GetId(), FinishedAt: timestamppb.Now(), Outcome: &linev1.CommandResult_Snapshot{Snapshot: snap},
					}}})
				case <-done:
					return
				}
			}
		})
	}
	tok, id, err := h.srv.CreateAPIToken(context.Background(), lines, true)
	if err != nil {
		t.Fatal(err)
	}
	h.api, h.tokenID = newAPIClient(t, h.srv, tok), id
	return h
}

// report has the agent of line report left new conversations for it (and
// extra for other lines), unsolicited as an agent's answer would arrive,
// and waits until the relay has taken it.
func (h *poolHarness) report(line string, left int32, extra ...*linev1.LineHeadroom) {
	h.t.Helper()
	a := h.agents[line]
	mark := fmt.Sprintf("report %d", h.reports.Add(1))
	hr := append([]*linev1.LineHeadroom{{Line: line, NewConversationsLeft: left, SendsLeft: -1}}, extra...)
	a.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: &linev1.HealthReport{
		Status: linev1.HealthStatus_HEALTH_STATUS_OK, At: timestamppb.Now(), Headroom: hr,
		Components: []*linev1.HealthComponent{{Name: "quota", Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: mark}},
	}}})
	eventually(h.t, "the relay takes the report", func() bool {
		c := h.srv.hub.state(a.id).lastHealth.GetComponents()
		return len(c) == 1 && c[0].GetDetail() == mark
	})
}

// newUsers has n new end users written to at once and returns how many
// each line got.
func (h *poolHarness) newUsers(n int) map[string]int {
	h.t.Helper()
	before := h.assigned()
	calls := make([]<-chan callResult, n)
	for i := range calls {
		h.users++
		chat := fmt.Sprintf("any;-;+1555888%04d", h.users)
		calls[i] = startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
			return h.api.msgs.SendTextMessage(h.api.ctx(""), &imessagev1.SendTextMessageRequest{ChatGuid: chat, Text: "hello"}, o...)
		})
	}
	for _, ch := range calls {
		if r := awaitCall(h.t, ch); r.err != nil {
			h.t.Fatalf("a new user's first message: %v", r.err)
		}
	}
	got := h.assigned()
	for l, k := range before {
		got[l] -= k
		if got[l] == 0 {
			delete(got, l)
		}
	}
	return got
}

// assigned is the token's recorded assignments per line.
func (h *poolHarness) assigned() map[string]int {
	h.t.Helper()
	rows, err := h.srv.store.db.Query(`SELECT line_key, COUNT(*) FROM pool_assignments WHERE token_id = ? GROUP BY line_key`, h.tokenID)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var l string
		var n int
		if err := rows.Scan(&l, &n); err != nil {
			h.t.Fatal(err)
		}
		out[l] = n
	}
	if err := rows.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

func wantUsers(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: new users per line %v, want %v", what, got, want)
	}
}

// New end users go to the line with the most reported headroom; the
// relay's own assignments lower it until the next report, so a burst
// spreads as the headroom falls; a full line gets one only when all are
// full; an agent's report of a line it does not serve is ignored.
func TestPoolPlacesNewUsersByReportedHeadroom(t *testing.T) {
	const l1, l2, l3 = "+15550000001", "+15550000002", "+15550000003"
	h := startPoolHarness(t, l1, l2, l3)
	h.report(l1, 5)
	h.report(l2, 40)
	h.report(l3, 0, &linev1.LineHeadroom{Line: l1, NewConversationsLeft: 1000, SendsLeft: -1})
	wantUsers(t, "5, 40 and 0 left", h.newUsers(1), map[string]int{l2: 1})

	// Ten at once between two reports: l1 has 6, l2 4.
	h.report(l1, 6)
	h.report(l2, 4)
	wantUsers(t, "a burst of ten on 6, 4 and 0", h.newUsers(10), map[string]int{l1: 6, l2: 4})

	// Every line is full now: the one with the fewest assignments in 24 h
	// (its agent answers QUOTA_EXCEEDED, which is the truth).
	wantUsers(t, "all full", h.newUsers(1), map[string]int{l3: 1})

	// A report starts the relay's count again.
	h.report(l1, 2)
	wantUsers(t, "l1 reports 2", h.newUsers(2), map[string]int{l1: 2})

	// Old users keep their lines whatever the headroom says.
	h.report(l2, 50)
	for range 2 {
		r := awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
			return h.api.msgs.SendTextMessage(h.api.ctx(""), &imessagev1.SendTextMessageRequest{ChatGuid: "any;-;+15558880001", Text: "again"}, o...)
		}))
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	wantUsers(t, "an old user writes again", h.newUsers(0), map[string]int{})
}

// No limit is the most headroom, and stays so; a line whose agent never
// reported ranks after lines known to have room, before lines known to be
// full, and among such lines the old rule holds.
func TestPoolHeadroomUnlimitedAndUnreported(t *testing.T) {
	const l1, l2, l3, l4 = "+15550000001", "+15550000002", "+15550000003", "+15550000004"
	h := startPoolHarness(t, l1, l2, l3, l4)
	h.report(l1, -1)
	h.report(l2, 40)
	wantUsers(t, "no limit and 40", h.newUsers(5), map[string]int{l1: 5})

	h.report(l1, 0)
	h.report(l2, 0)
	wantUsers(t, "full lines and two without a report", h.newUsers(3), map[string]int{l3: 2, l4: 1})

	// A new group counts each member against the line it goes on.
	h.report(l3, 3)
	h.report(l4, 2)
	group := awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.CreateChatResponse, error) {
		return h.api.chats.CreateChat(h.api.ctx(""), &imessagev1.CreateChatRequest{Addresses: []string{"+15557770001", "+15557770002"}}, o...)
	}))
	if group.err != nil {
		t.Fatal(group.err)
	}
	wantUsers(t, "after a group of two on l3", h.newUsers(1), map[string]int{l4: 1})
}
