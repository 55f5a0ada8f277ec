package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func getEvents(t *testing.T, srv *Server, query string) EventsPage {
	t.Helper()
	code, b := httpDo(t, srv, http.MethodGet, "/v1/events?"+query, "")
	if code != http.StatusOK {
		t.Fatalf("GET /v1/events?%s: %d %s", query, code, b)
	}
	return decode[EventsPage](t, b)
}

func eventText(t *testing.T, v EventView) string {
	t.Helper()
	ev := &linev1.Event{}
	if err := protojson.Unmarshal(v.Event, ev); err != nil {
		t.Fatalf("event JSON %s: %v", v.Event, err)
	}
	return ev.GetMessage().GetText()
}

func TestEventsStoredDedupedAckedAndPolled(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()

	for i := uint64(1); i <= 5; i++ {
		a.event(i, fmt.Sprintf("m%d/message/1", i), fmt.Sprintf("text %d", i))
	}
	// Acks are batched but always reach the highest stored sequence.
	for ack := a.nextAck(); ack != 5; ack = a.nextAck() {
		if ack > 5 || ack == 0 {
			t.Fatalf("ack %d", ack)
		}
	}
	page := getEvents(t, srv, "after=0")
	if len(page.Events) != 5 || page.Next != page.Events[4].Seq {
		t.Fatalf("page %+v", page)
	}
	for i, v := range page.Events {
		if v.AgentID != a.id || eventText(t, v) != fmt.Sprintf("text %d", i+1) || (i > 0 && v.Seq <= page.Events[i-1].Seq) {
			t.Fatalf("event %d: %+v", i, v)
		}
		if !strings.Contains(string(v.Event), `"message_guid"`) {
			t.Fatalf("event JSON does not use proto names: %s", v.Event)
		}
	}

	// Redelivery after a reconnect: sequences at or below the stored one are
	// acked and dropped; a new sequence with a known key is dropped too.
	a.close()
	w := a.connect()
	if w.GetStoredEventSequence() != 5 {
		t.Fatalf("Welcome.stored_event_sequence %d, want 5", w.GetStoredEventSequence())
	}
	a.event(3, "m3/message/1", "text 3")
	if ack := a.nextAck(); ack != 5 {
		t.Fatalf("duplicate acked with %d", ack)
	}
	a.event(6, "m2/message/1", "same key again")
	if ack := a.nextAck(); ack != 6 {
		t.Fatalf("key duplicate acked with %d", ack)
	}
	if page := getEvents(t, srv, "after=0&limit=1000"); len(page.Events) != 5 {
		t.Fatalf("%d events stored, want 5", len(page.Events))
	}

	// limit and next page through in order.
	p1 := getEvents(t, srv, "after=0&limit=2")
	p2 := getEvents(t, srv, fmt.Sprintf("after=%d&limit=2", p1.Next))
	if len(p1.Events) != 2 || len(p2.Events) != 2 || eventText(t, p2.Events[0]) != "text 3" {
		t.Fatalf("pages %+v %+v", p1, p2)
	}

	// Long poll: returns as soon as a new event is stored.
	cursor := page.Next
	done := make(chan EventsPage, 1)
	start := time.Now()
	go func() {
		p, _ := srv.Events(context.Background(), cursor, 100, 10*time.Second)
		done <- p
	}()
	httpPoll := make(chan EventsPage, 1)
	url := fmt.Sprintf("http://%s/v1/events?after=%d&wait=10", srv.HTTPAddr(), cursor)
	go func() {
		// Not httpDo: t.Fatal must not run outside the test goroutine.
		var p EventsPage
		if resp, err := http.Get(url); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
		}
		httpPoll <- p
	}()
	time.Sleep(100 * time.Millisecond)
	a.event(7, "m7/message/1", "text 7")
	for _, ch := range []chan EventsPage{done, httpPoll} {
		select {
		case p := <-ch:
			if len(p.Events) != 1 || eventText(t, p.Events[0]) != "text 7" || p.Next != p.Events[0].Seq {
				t.Fatalf("long poll got %+v", p)
			}
		case <-time.After(waitFor):
			t.Fatal("long poll did not return")
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("long poll took %s", d)
	}

	// An empty long poll waits about as long as asked, then answers with the
	// same cursor.
	start = time.Now()
	p := getEvents(t, srv, fmt.Sprintf("after=%d&wait=0.3", cursor+100))
	if d := time.Since(start); len(p.Events) != 0 || p.Next != cursor+100 || d < 250*time.Millisecond {
		t.Fatalf("empty poll %+v after %s", p, d)
	}
	for _, bad := range []string{"after=-1", "limit=0", "wait=x", "after=abc"} {
		if code, _ := httpDo(t, srv, http.MethodGet, "/v1/events?"+bad, ""); code != http.StatusBadRequest {
			t.Errorf("%s: %d", bad, code)
		}
	}
}

func TestEventBurstIsBatched(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	const n = 1000
	for i := uint64(1); i <= n; i++ {
		a.event(i, fmt.Sprintf("b%d/message/1", i), "burst")
	}
	acks := 0
	for ack := uint64(0); ack != n; acks++ {
		next := a.nextAck()
		if next < ack {
			t.Fatalf("ack went back from %d to %d", ack, next)
		}
		ack = next
	}
	if acks >= n {
		t.Fatalf("%d acks for %d events: not batched", acks, n)
	}
	if p := getEvents(t, srv, "after=0&limit=5000"); len(p.Events) != maxEventsPerPoll {
		t.Fatalf("limit not capped: %d", len(p.Events))
	}
}
