package fleetload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// pollWait is the long poll's wait, in seconds: well under the relay's
// 60 s cap, so a poll ends and is renewed during a long run.
const pollWait = 20

// FanOut is one run of events from the fleet to long-poll subscribers of
// GET /v1/events on one relay.
type FanOut struct {
	// Agents emit the events, round robin.
	Agents []*Agent
	// Target is the relay whose operator API the subscribers poll.
	Target Target
	// Subscribers is how many independent long-poll loops read every
	// event, each with its own cursor and connection.
	Subscribers int
	// Events is how many events are emitted after one warm-up event that
	// every subscriber must see first.
	Events int
	// Rate, when positive, paces the emission at that many events per
	// second; zero hands them all to the agents at once (a burst, for
	// the delivered rate).
	Rate float64
	// Timeout bounds the wait for the last delivery after the last
	// emission. Default 15 s.
	Timeout time.Duration
}

// FanOutReport is what a FanOut measured.
type FanOutReport struct {
	// Latencies are, per event and subscriber, from the agent putting the
	// event on its stream to the subscriber having decoded it.
	Latencies []time.Duration
	// Delivered counts (event, subscriber) arrivals; Missing the ones
	// that did not come within Timeout; Duplicates arrivals of an event a
	// subscriber already had.
	Delivered, Missing, Duplicates int
	// Span is from the first emission to the last delivery; PerSec is
	// Delivered over Span, EventsPerSec Events over Span.
	Span                 time.Duration
	PerSec, EventsPerSec float64
}

// eventsPage is the part of GET /v1/events' answer a subscriber reads.
type eventsPage struct {
	Events []struct {
		Event struct {
			Key  string    `json:"key"`
			Date time.Time `json:"date"`
		} `json:"event"`
	} `json:"events"`
	Next int64 `json:"next"`
}

// fanState gathers every subscriber's arrivals.
type fanState struct {
	mu      sync.Mutex
	want    map[string]bool // the measured events' keys
	seen    []map[string]bool
	lat     []time.Duration
	dups    int
	last    time.Time
	got     int
	allSeen chan struct{} // closed when got reaches total
	total   int
	warmKey string
	warm    []bool
	warmN   int
	warmAll chan struct{}
}

func (st *fanState) arrived(sub int, key string, sent, at time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if key == st.warmKey {
		if !st.warm[sub] {
			st.warm[sub] = true
			if st.warmN++; st.warmN == len(st.warm) {
				close(st.warmAll)
			}
		}
		return
	}
	if !st.want[key] {
		return
	}
	if st.seen[sub][key] {
		st.dups++
		return
	}
	st.seen[sub][key] = true
	st.lat = append(st.lat, at.Sub(sent))
	st.last = at
	if st.got++; st.got == st.total {
		close(st.allSeen)
	}
}

// RunFanOut starts the subscribers at the relay's head, waits until each
// has seen a warm-up event (so each holds a long poll), then has the
// agents emit the events and waits for every subscriber to see each one.
func RunFanOut(ctx context.Context, f FanOut) (*FanOutReport, error) {
	if len(f.Agents) == 0 || f.Subscribers <= 0 || f.Events <= 0 {
		return nil, errors.New("fleetload: FanOut needs Agents, Subscribers and Events")
	}
	if f.Timeout <= 0 {
		f.Timeout = 15 * time.Second
	}
	hc := newHTTPClient(f.Subscribers)
	defer hc.CloseIdleConnections()
	head, err := head(ctx, hc, f.Target)
	if err != nil {
		return nil, err
	}
	st := &fanState{want: map[string]bool{}, seen: make([]map[string]bool, f.Subscribers),
		allSeen: make(chan struct{}), total: f.Events * f.Subscribers,
		warm: make([]bool, f.Subscribers), warmAll: make(chan struct{})}
	for i := range st.seen {
		st.seen[i] = map[string]bool{}
	}
	// The keys are made by the agents; the warm-up's must be known before
	// any subscriber reads it, so it is emitted with the state locked.
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, f.Subscribers)
	st.mu.Lock()
	for i := range f.Subscribers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := subscribe(sctx, hc, f.Target, head, func(key string, sent, at time.Time) { st.arrived(i, key, sent, at) }); err != nil && sctx.Err() == nil {
				errs <- err
			}
		}()
	}
	st.warmKey, err = f.Agents[0].EmitMessage(ctx, "fleetload warm-up")
	st.mu.Unlock()
	defer wg.Wait()
	defer stop()
	if err != nil {
		return nil, err
	}
	if err := wait(ctx, st.warmAll, errs, f.Timeout, "every subscriber to see the warm-up event"); err != nil {
		return nil, err
	}

	// Emit: the keys are registered before the event can be read.
	first := time.Now()
	gap := time.Duration(0)
	if f.Rate > 0 {
		gap = time.Duration(float64(time.Second) / f.Rate)
	}
	for i := range f.Events {
		if gap > 0 {
			if w := time.Until(first.Add(time.Duration(i) * gap)); w > 0 {
				time.Sleep(w)
			}
		}
		a := f.Agents[i%len(f.Agents)]
		st.mu.Lock()
		key, err := a.EmitMessage(ctx, fmt.Sprintf("fleetload fan-out %d", i))
		if err == nil {
			st.want[key] = true
		}
		st.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	werr := wait(ctx, st.allSeen, errs, f.Timeout, "every delivery")
	st.mu.Lock()
	defer st.mu.Unlock()
	r := &FanOutReport{Latencies: st.lat, Delivered: st.got, Missing: st.total - st.got, Duplicates: st.dups}
	if !st.last.IsZero() {
		r.Span = st.last.Sub(first)
		r.PerSec = float64(r.Delivered) / r.Span.Seconds()
		r.EventsPerSec = float64(f.Events) / r.Span.Seconds()
	}
	if werr != nil && ctx.Err() != nil {
		return nil, werr
	}
	if werr != nil && r.Delivered == 0 {
		return nil, werr
	}
	return r, nil // a missing delivery is a finding, reported in Missing
}

func wait(ctx context.Context, done <-chan struct{}, errs <-chan error, limit time.Duration, what string) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case err := <-errs:
		return fmt.Errorf("fleetload: a subscriber failed waiting for %s: %w", what, err)
	case <-t.C:
		return fmt.Errorf("fleetload: waited %s for %s", limit, what)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// head is the relay's event cursor now: GET /v1/events paged from 0 until
// a page comes back empty (bounded: at most 10,000 pages).
func head(ctx context.Context, hc *http.Client, t Target) (int64, error) {
	var after int64
	for range 10000 {
		p, err := poll(ctx, hc, t, after, 0)
		if err != nil {
			return 0, err
		}
		if len(p.Events) == 0 {
			return after, nil
		}
		after = p.Next
	}
	return 0, errors.New("fleetload: the event log did not end within 10,000 pages")
}

// subscribe is one operator's long-poll loop from after: each page's
// events are handed to got with their send time (the agent stamps an
// event's date as it sends it) and the time the page was decoded.
func subscribe(ctx context.Context, hc *http.Client, t Target, after int64, got func(key string, sent, at time.Time)) error {
	for ctx.Err() == nil {
		p, err := poll(ctx, hc, t, after, pollWait)
		if err != nil {
			return err
		}
		at := time.Now()
		for _, e := range p.Events {
			got(e.Event.Key, e.Event.Date, at)
		}
		after = p.Next
	}
	return nil
}

func poll(ctx context.Context, hc *http.Client, t Target, after int64, waitSecs int) (*eventsPage, error) {
	url := fmt.Sprintf("http://%s/v1/events?after=%d&limit=1000&wait=%d", t.HTTPAddr, after, waitSecs)
	rctx, cancel := context.WithTimeout(ctx, time.Duration(waitSecs+10)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fleetload: GET /v1/events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("fleetload: GET /v1/events: %d %s", resp.StatusCode, b)
	}
	p := &eventsPage{}
	if err := json.NewDecoder(resp.Body).Decode(p); err != nil {
		return nil, fmt.Errorf("fleetload: GET /v1/events: %w", err)
	}
	return p, nil
}
