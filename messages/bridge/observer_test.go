package bridge_test

import (
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// roundTrips records what a RoundTripObserver hears.
type roundTrips struct {
	mu sync.Mutex
	// seen counts "action result" pairs; guarded by mu.
	seen map[string]int
}

func (r *roundTrips) HelperRoundTrip(action, result string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if took < 0 {
		result += " (negative duration)"
	}
	r.seen[action+" "+result]++
}

func (r *roundTrips) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key]
}

// The observer hears each request once with its outcome: the handshake,
// answered requests, a helper's error and a request the helper never
// answers (its deadline).
func TestRoundTripObserverHearsEachRequestOnce(t *testing.T) {
	obs := &roundTrips{seen: map[string]int{}}
	e := start(t, bridge.Options{Observer: obs, RequestTimeout: 300 * time.Millisecond},
		simhelper.Options{Fail: map[string]string{bridge.ActionMarkChatRead: "Chat does not exist!"}, Silent: []string{bridge.ActionStopTyping}})
	c := ctx(t)
	for range 2 {
		if _, err := e.b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, e.b.MarkRead(c, chat1), linev1.ErrorCode_ERROR_CODE_NOT_FOUND)
	wantCode(t, e.b.Typing(c, chat1, false), linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED)

	for key, want := range map[string]int{
		bridge.ActionHello + " ok":                           1,
		bridge.ActionSendMessage + " ok":                     2,
		bridge.ActionMarkChatRead + " NOT_FOUND":             1,
		bridge.ActionStopTyping + " DEADLINE_EXCEEDED":       1,
		bridge.ActionSendMessage + " ok (negative duration)": 0,
	} {
		if got := obs.count(key); got != want {
			t.Errorf("%q heard %d times, want %d (all: %v)", key, got, want, obs.seen)
		}
	}
}
