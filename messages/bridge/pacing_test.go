package bridge_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A BlueBubbles helper reading one message per socket read, over real
// loopback TCP: after each read it takes 5 ms before reading again, so
// two requests written within 5 ms of each other share a read and the
// second is lost. TestPacingOffLosesRequests shows the helper does lose
// them; TestAnswerPacingLosesNothing that answer pacing does not.
var oneMessagePerRead = simhelper.Options{Base: true, ChunkReads: true, ReadPause: 5 * time.Millisecond}

const burstSize = 40

// sendBurst sends n texts at once, each with its own deadline, and
// returns the error of each.
func sendBurst(b *bridge.Bridge, n int, timeout time.Duration) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			_, errs[i] = b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: "burst " + strconv.Itoa(i)})
		})
	}
	wg.Wait()
	return errs
}

// Requests sent as fast as possible, paced by the helper's answers, all
// arrive, one per read, and are answered.
func TestAnswerPacingLosesNothing(t *testing.T) {
	e := start(t, bridge.Options{Pacing: bridge.PacingAnswers, WriteGap: bridge.DefaultWriteGap}, oneMessagePerRead)
	for i, err := range sendBurst(e.b, burstSize, 5*time.Second) {
		if err != nil {
			t.Errorf("send %d: %v", i, err)
		}
	}
	if got := e.h.Coalesced(); got != 0 {
		t.Fatalf("the helper lost %d requests that shared a read", got)
	}
	if got, want := e.h.Requests(), burstSize+1; got != want { // +1: the hello
		t.Fatalf("the helper read %d requests, want %d", got, want)
	}
	if got := len(e.mem.Calls()); got != burstSize {
		t.Fatalf("Messages was asked %d times, want %d", got, burstSize)
	}
}

// Without pacing the same burst reaches the same helper in shared reads
// and loses requests: the simulated helper models the limit, so the test
// above can fail.
func TestPacingOffLosesRequests(t *testing.T) {
	e := start(t, bridge.Options{WriteGap: -1, RequestTimeout: time.Second}, oneMessagePerRead)
	errs := sendBurst(e.b, burstSize, time.Second)
	lost := e.h.Coalesced()
	if lost == 0 {
		t.Fatal("no request was lost without pacing: the simulated helper does not model one message per read")
	}
	unanswered := 0
	for _, err := range errs {
		if err != nil {
			if got := code(t, err); got != linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED {
				t.Fatalf("a lost request failed with %v, want DEADLINE_EXCEEDED (%v)", got, err)
			}
			unanswered++
		}
	}
	if unanswered < lost {
		t.Fatalf("%d requests went unanswered, but the helper lost %d", unanswered, lost)
	}
	t.Logf("without pacing: %d of %d requests lost in shared reads, %d unanswered", lost, burstSize, unanswered)
}

func TestParsePacing(t *testing.T) {
	for in, want := range map[string]bridge.Pacing{"": bridge.PacingAnswers, "answers": bridge.PacingAnswers, "fixed": bridge.PacingFixed} {
		if got, err := bridge.ParsePacing(in); err != nil || got != want {
			t.Errorf("ParsePacing(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := bridge.ParsePacing("fast"); err == nil {
		t.Fatal(`ParsePacing("fast") succeeded`)
	}
	if _, err := bridge.Listen(context.Background(), bridge.Options{Addr: "127.0.0.1:0", Pacing: "fast"}); err == nil {
		t.Fatal("Listen took an unknown pacing")
	}
}
