package agent

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// These tests run the session against a fakeRelay inside a testing/synctest
// bubble: advance moves the fake clock, so waits of seconds and minutes are
// checked to the millisecond and cost no real time. The session starts at
// the bubble's time zero; the relay's Hello and Welcome take no time.

// everyInterval is the Welcome of the default script: 15 s heartbeats.
func everyInterval() *linev1.Welcome {
	return &linev1.Welcome{HeartbeatInterval: durationpb.New(15 * time.Second)}
}

func TestWatchdogEndsASilentStreamAtTwiceTheInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Welcomes, then reads (heartbeats arrive) but never says a word:
		// a relay whose process hangs while TCP stays up.
		r := newFakeRelay(t, nil)
		s := startSession(t, r, nil)
		first := r.stream(1)
		if first == nil || !s.Connected() {
			t.Fatal("no stream after the start")
		}
		advance(30*time.Second - time.Millisecond)
		if !first.open() {
			t.Fatalf("the stream ended after %v of silence, before twice the 15 s interval", first.lasted())
		}
		if n := len(sent(first, (*linev1.AgentFrame).GetHeartbeat)); n != 1 {
			t.Fatalf("%d heartbeats in 30 s at a 15 s interval, want 1", n)
		}
		advance(time.Millisecond)
		if first.open() || first.lasted() != 30*time.Second {
			t.Fatalf("silent stream: open %v, lasted %v; want it ended at 30 s", first.open(), first.lasted())
		}
		if c := s.Component(); c.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(c.GetDetail(), errWatchdog.Error()) {
			t.Fatalf("health between streams: %v", c)
		}
		advance(500 * time.Millisecond) // the first backoff wait: half of 1 s
		if r.count() != 2 || !s.Connected() {
			t.Fatalf("%d streams, connected %v; want the second one up", r.count(), s.Connected())
		}
	})
}

func TestWatchdogSparesARelayThatSpeaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A frame every 29 s: never twice the 15 s interval without one.
		r := newFakeRelay(t, func(st *relayStream) error {
			if err := st.welcome(everyInterval()); err != nil {
				return err
			}
			go func() {
				for {
					select {
					case <-time.After(29 * time.Second):
						st.srv.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Heartbeat{Heartbeat: &linev1.Heartbeat{}}})
					case <-st.srv.Context().Done():
						return
					}
				}
			}()
			return st.read()
		})
		startSession(t, r, nil)
		advance(10 * time.Minute)
		if r.count() != 1 || !r.stream(1).open() {
			t.Fatalf("%d streams; a relay that speaks every 29 s lost its stream", r.count())
		}
		if n := len(sent(r.stream(1), (*linev1.AgentFrame).GetHeartbeat)); n != 40 {
			t.Fatalf("%d heartbeats in 10 min at a 15 s interval, want 40", n)
		}
	})
}

// Full jitter fixed at one half: waits are half the ceiling, which doubles
// from 1 s to the 3 s cap, and starts over only after a Welcome.
func TestBackoffGrowsUntilAWelcomeThenStartsOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, func(st *relayStream) error {
			switch {
			case st.n <= 4: // accepts the connection, fails before Welcome
				return status.Error(codes.Unavailable, "relay starting")
			case st.n == 5: // welcomes, then closes at once
				return st.welcome(everyInterval())
			}
			return welcomeAndRead(everyInterval())(st)
		})
		startSession(t, r, nil)
		advance(10 * time.Second) // the waits add up to 5 s; the watchdog would end stream 6 at 30 s
		if r.count() != 6 || !r.stream(6).open() {
			t.Fatalf("%d streams, want 6 with the last one up", r.count())
		}
		var gaps []time.Duration
		for n := 2; n <= 6; n++ {
			gaps = append(gaps, r.stream(n).opened.Sub(r.stream(n-1).opened))
		}
		want := []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 1500 * time.Millisecond, 500 * time.Millisecond}
		if !slices.Equal(gaps, want) {
			t.Fatalf("waits between attempts %v, want %v", gaps, want)
		}
	})
}

func TestReconnectWithinTheBackoffCapAfterALongOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, nil)
		s := startSession(t, r, nil)
		r.down()
		advance(30 * time.Second) // long enough for the backoff to reach its 3 s cap
		if s.Connected() || r.count() != 1 {
			t.Fatalf("connected %v with %d streams while the relay is down", s.Connected(), r.count())
		}
		if c := s.Component(); c.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN {
			t.Fatalf("health while the relay is down: %v", c)
		}
		// No stream: Emit drops the frame (it is in the journal) and returns.
		s.Emit(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Heartbeat{Heartbeat: &linev1.Heartbeat{}}})

		back := time.Now()
		r.up()
		advance(1500 * time.Millisecond) // one capped wait, jitter one half
		if r.count() != 2 || !s.Connected() {
			t.Fatalf("%d streams, connected %v, %v after the relay came back; want back within one capped wait",
				r.count(), s.Connected(), time.Since(back))
		}
	})
}

func TestNoWelcomeInTimeEndsTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, func(st *relayStream) error {
			if st.n == 1 {
				return st.read() // takes Hello, never answers
			}
			return welcomeAndRead(everyInterval())(st)
		})
		s := startSession(t, r, nil)
		advance(15*time.Second - time.Millisecond)
		if !r.stream(1).open() || s.Connected() {
			t.Fatal("the wait for Welcome ended before the 15 s timeout")
		}
		advance(time.Millisecond)
		if r.stream(1).open() || r.stream(1).lasted() != 15*time.Second {
			t.Fatal("the stream without Welcome was not ended at 15 s")
		}
		if c := s.Component(); !strings.Contains(c.GetDetail(), errNoWelcome.Error()) {
			t.Fatalf("health: %v", c)
		}
		advance(500 * time.Millisecond)
		if !s.Connected() || r.count() != 2 {
			t.Fatalf("no second stream after the backoff: %d streams", r.count())
		}
	})
}

func TestGoodbyeEndsTheSessionOnceTheRelayCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, nil) // closes its side when the agent half-closes
		s := startSession(t, r, nil)
		s.Goodbye()
		synctest.Wait()
		if s.running() || s.err != nil {
			t.Fatalf("Run after Goodbye: running %v, err %v; want it returned at once", s.running(), s.err)
		}
		byes := sent(r.stream(1), (*linev1.AgentFrame).GetGoodbye)
		if len(byes) != 1 || byes[0].GetReason() != "agent shutting down" {
			t.Fatalf("goodbyes %v", byes)
		}
	})
}

func TestGoodbyeWaitsAtMostThreeSecondsForTheRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, func(st *relayStream) error {
			if err := welcomeAndRead(everyInterval())(st); err != nil {
				return err
			}
			<-st.srv.Context().Done() // read the Goodbye, keeps its side open
			return nil
		})
		s := startSession(t, r, nil)
		s.Goodbye()
		advance(3*time.Second - time.Millisecond)
		if !s.running() || !r.stream(1).open() {
			t.Fatal("the stream was cut before the relay had its 3 s to close it")
		}
		advance(time.Millisecond)
		if s.running() || r.stream(1).open() {
			t.Fatalf("Run still running %v, stream open %v, 3 s after Goodbye", s.running(), r.stream(1).open())
		}
	})
}

func TestDrainSaysGoodbyeAndComesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, func(st *relayStream) error {
			if err := st.welcome(everyInterval()); err != nil {
				return err
			}
			if st.n == 1 {
				if err := st.srv.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Drain{Drain: &linev1.Drain{Reason: "relay restarting"}}}); err != nil {
					return err
				}
			}
			return st.read()
		})
		s := startSession(t, r, nil)
		first := r.stream(1)
		if first.open() || s.Connected() {
			t.Fatal("a drained stream is still up")
		}
		byes := sent(first, (*linev1.AgentFrame).GetGoodbye)
		if len(byes) != 1 || byes[0].GetReason() != "drained at the relay's request" {
			t.Fatalf("goodbyes %v", byes)
		}
		advance(500 * time.Millisecond) // the stream was welcomed: the backoff starts over
		if r.count() != 2 || !s.Connected() {
			t.Fatalf("%d streams after a drain, want the agent back on a second", r.count())
		}
	})
}

func TestChangedCapabilitiesAnnouncedAtTheNextHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		caps := []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}
		r := newFakeRelay(t, nil)
		s := startSession(t, r, func(o *SessionOptions) {
			o.Hello = func() *linev1.Hello {
				mu.Lock()
				defer mu.Unlock()
				return &linev1.Hello{AgentId: "agt", Capabilities: slices.Clone(caps)}
			}
		})
		advance(time.Second)
		mu.Lock()
		caps = append(caps, linev1.Capability_CAPABILITY_TYPING) // the helper connected
		mu.Unlock()
		advance(14*time.Second - time.Millisecond)
		if r.count() != 1 {
			t.Fatal("reconnected before the next heartbeat")
		}
		advance(time.Millisecond)
		if r.count() != 2 || !s.Connected() {
			t.Fatalf("%d streams at the heartbeat after the change, want a second one at once (no backoff)", r.count())
		}
		if byes := sent(r.stream(1), (*linev1.AgentFrame).GetGoodbye); len(byes) != 1 || byes[0].GetReason() != "capabilities changed" {
			t.Fatalf("goodbyes %v", byes)
		}
		if got := r.stream(2).hello.GetCapabilities(); len(got) != 2 || r.stream(2).opened.Sub(r.stream(1).opened) != 15*time.Second {
			t.Fatalf("second Hello %v at %v", got, r.stream(2).opened.Sub(r.stream(1).opened))
		}
	})
}

// sequences are the sequences of the events the agent sent on st.
func sequences(st *relayStream) []uint64 {
	var out []uint64
	for _, ev := range sent(st, (*linev1.AgentFrame).GetEvent) {
		out = append(out, ev.GetSequence())
	}
	return out
}

func TestPumpStaysWithinTheWindowAndResumesAfterTheAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		commit := func(j *Journal, keys ...string) {
			var evs []*linev1.Event
			for _, k := range keys {
				evs = append(evs, &linev1.Event{Key: k, MessageGuid: k})
			}
			if err := j.Commit(ctx, evs, nil); err != nil {
				t.Fatal(err)
			}
		}
		// The relay stored event 1 before the agent heard its ack, and
		// lets two events be unacknowledged.
		r := newFakeRelay(t, welcomeAndRead(&linev1.Welcome{HeartbeatInterval: durationpb.New(15 * time.Second),
			StoredEventSequence: 1, Limits: &linev1.Limits{MaxUnackedEvents: 2}}))
		s := startSession(t, r, func(o *SessionOptions) { commit(o.Journal, "e1", "e2", "e3", "e4", "e5") })
		first := r.stream(1)
		ack := func(seq uint64) {
			if err := first.srv.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_EventAck{EventAck: &linev1.EventAck{Sequence: seq}}}); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		if got := sequences(first); !slices.Equal(got, []uint64{2, 3}) {
			t.Fatalf("sent %v; want 2 and 3: after the stored point, two ahead", got)
		}
		ack(3)
		if got := sequences(first); !slices.Equal(got, []uint64{2, 3, 4, 5}) {
			t.Fatalf("sent %v after the ack of 3", got)
		}
		if n := s.journal.OutboxLen(); n != 2 {
			t.Fatalf("outbox holds %d after the ack of 3, want 4 and 5", n)
		}
		commit(s.journal, "e6")
		synctest.Wait()
		if got := sequences(first); len(got) != 4 {
			t.Fatalf("sent %v: the window was full", got)
		}
		ack(5)
		if got := sequences(first); !slices.Equal(got, []uint64{2, 3, 4, 5, 6}) {
			t.Fatalf("sent %v after the ack of 5", got)
		}

		// A new stream resumes after the last ack: 6 again, and nothing older.
		r.down()
		r.up()
		advance(500 * time.Millisecond)
		second := r.stream(2)
		if second == nil || second.hello.GetAckedEventSequence() != 5 {
			t.Fatalf("second stream %v", second)
		}
		if got := sequences(second); !slices.Equal(got, []uint64{6}) {
			t.Fatalf("replayed %v on the new stream, want 6", got)
		}
	})
}

func TestUnauthenticatedRenewsTheTokenBeforeTheNextTry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, nil)
		r.mu.Lock()
		r.token = "tok1" // what the next Refresh hands out; tok0 is no longer good
		r.mu.Unlock()
		s := startSession(t, r, nil)
		r.mu.Lock()
		rejected, refreshes := r.rejected, r.refreshes
		r.mu.Unlock()
		if rejected != 1 || refreshes != 0 || s.Connected() {
			t.Fatalf("rejected %d, refreshed %d, connected %v; want one refusal and no renewal yet", rejected, refreshes, s.Connected())
		}
		advance(500 * time.Millisecond)
		r.mu.Lock()
		refreshes = r.refreshes
		r.mu.Unlock()
		if refreshes != 1 || !s.Connected() || r.stream(1).auth != "Bearer tok1" {
			t.Fatalf("refreshed %d, connected %v; want one renewal and the new token on the stream", refreshes, s.Connected())
		}
	})
}

func TestWelcomeRefusedLinesAreLoggedAndInHealth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := everyInterval()
		w.RefusedLines = []*linev1.RefusedLine{{Line: "+15550000002", Reason: "bound to agent agt-2"}}
		r := newFakeRelay(t, welcomeAndRead(w))
		var logs syncBuffer
		s := startSession(t, r, func(o *SessionOptions) {
			o.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tWriter{t}), nil))
		})
		if !strings.Contains(logs.String(), "the relay refused a line") || !strings.Contains(logs.String(), "+15550000002") {
			t.Fatalf("log:\n%s", logs.String())
		}
		c := s.Component()
		if c.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(c.GetDetail(), "+15550000002 (bound to agent agt-2)") {
			t.Fatalf("relay component %v", c)
		}
		// And a health check is answered on the stream.
		if err := r.stream(1).srv.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_HealthCheck{HealthCheck: &linev1.HealthCheck{Id: "hc-1"}}}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if reps := sent(r.stream(1), (*linev1.AgentFrame).GetHealth); len(reps) != 1 || reps[0].GetCheckId() != "hc-1" {
			t.Fatalf("health answers %v", reps)
		}
	})
}
