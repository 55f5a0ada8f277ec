package fleetload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Line is where a command goes: an agent's line and the relay that agent
// is connected to. It is all a submitter needs of an agent, so the agents
// may run in another process (cmd/bench keeps them out of the relay's,
// whose collector would otherwise scan their goroutines too).
type Line struct {
	// Number is the line, E.164.
	Number string
	// Target is the relay the line's agent is connected to.
	Target Target
}

// Load is one run of commands through the operator API.
type Load struct {
	// Lines are who the commands are for: each command goes to one of
	// them, picked at random.
	Lines []Line
	// Submit are the operator APIs commands are posted to, one picked at
	// random per command. Empty, or with LocalOnly, each command goes to
	// the relay its line's agent is connected to.
	Submit []Target
	// LocalOnly posts each command to its own agent's relay: with several
	// replicas that is not cross-replica delivery, and is measured only
	// to say so.
	LocalOnly bool
	// Results tells when each result is stored.
	Results Results
	// Clients bounds the commands in flight: that many client goroutines,
	// each with one command at a time. Default 64.
	Clients int
	// Rate, when positive, paces submissions at that many per second
	// (open loop: a command's latency counts from when it was due, so a
	// backlog is measured, not hidden). Zero is a closed loop: each
	// client submits its next command as soon as its last one's result
	// is stored, which finds the peak.
	Rate float64
	// Warmup runs before the measured Duration; neither its commands nor
	// its results are counted.
	Warmup, Duration time.Duration
	// Timeout bounds the wait for one result. Default 10 s.
	Timeout time.Duration
	// IDPrefix starts every command id; runs on one relay need their own.
	IDPrefix string
}

// Report is what a Load measured in its measured window.
type Report struct {
	// Latencies are submit to result stored (from when the command was
	// due, when paced) of the commands started in the window.
	Latencies []time.Duration
	// Posted are the same commands' times from the POST going out to
	// the result stored: Latencies without the wait for a free client or
	// for the load generator's own goroutines, which share the machine.
	Posted []time.Duration
	// Done counts the results stored in the window; PerSec is Done over
	// the window.
	Done   int
	PerSec float64
	// Failed counts commands started in the window whose stored state was
	// not "succeeded"; TimedOut those whose result did not come within
	// Timeout; Refused those the operator API did not take (not 202).
	Failed, TimedOut, Refused int
	// FirstRefusal is the first refusal's status and body.
	FirstRefusal string
	// Late counts paced commands in the window that found every client
	// busy when they were due, and waited for one.
	Late int
	// Window is the measured window's length.
	Window time.Duration
}

// sample is one command's outcome.
type sample struct {
	start, posted, end time.Time
	state              string
	timedOut           bool
	refused            string
}

// Run submits commands until Warmup+Duration has passed, waits for the
// ones in flight (at most Timeout) and reports the window.
func Run(ctx context.Context, l Load) (*Report, error) {
	if len(l.Lines) == 0 || l.Results == nil || l.Duration <= 0 {
		return nil, errors.New("fleetload: Load needs Lines, Results and Duration")
	}
	if l.Clients <= 0 {
		l.Clients = 64
	}
	if l.Timeout <= 0 {
		l.Timeout = 10 * time.Second
	}
	hc := newHTTPClient(l.Clients)
	defer hc.CloseIdleConnections()
	start := time.Now()
	from, until := start.Add(l.Warmup), start.Add(l.Warmup+l.Duration)

	var (
		mu      sync.Mutex
		samples []sample
		seq     atomic.Int64
		late    atomic.Int64
	)
	one := func(rnd *rand.Rand, due time.Time) {
		a := l.Lines[rnd.IntN(len(l.Lines))]
		to := a.Target
		if !l.LocalOnly && len(l.Submit) > 0 {
			to = l.Submit[rnd.IntN(len(l.Submit))]
		}
		id := fmt.Sprintf("%s%08d", l.IDPrefix, seq.Add(1))
		s := submitOne(ctx, hc, l.Results, to, a, id, due, l.Timeout, l.Timeout+30*time.Second)
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}

	var wg sync.WaitGroup
	if l.Rate <= 0 {
		for c := range l.Clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(c), 13))
				for ctx.Err() == nil && time.Now().Before(until) {
					one(rnd, time.Now())
				}
			}()
		}
	} else {
		due := make(chan time.Time)
		for c := range l.Clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(c), 17))
				for d := range due {
					one(rnd, d)
				}
			}()
		}
		gap := time.Duration(float64(time.Second) / l.Rate)
		for i := 0; ctx.Err() == nil; i++ {
			d := start.Add(time.Duration(i) * gap)
			if !d.Before(until) {
				break
			}
			if w := time.Until(d); w > 0 {
				time.Sleep(w)
			}
			select {
			case due <- d:
				continue
			default:
			}
			// Every client is busy: the command waits, and its latency
			// still counts from when it was due.
			if !d.Before(from) {
				late.Add(1)
			}
			select {
			case due <- d:
			case <-ctx.Done():
			}
		}
		close(due)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r := &Report{Window: l.Duration}
	for _, s := range samples {
		if !s.end.IsZero() && !s.end.Before(from) && s.end.Before(until) && s.state == "succeeded" {
			r.Done++
		}
		if s.start.Before(from) || !s.start.Before(until) {
			continue
		}
		switch {
		case s.refused != "":
			r.Refused++
			if r.FirstRefusal == "" {
				r.FirstRefusal = s.refused
			}
		case s.timedOut:
			r.TimedOut++
		case s.state != "succeeded":
			r.Failed++
		default:
			r.Latencies = append(r.Latencies, s.end.Sub(s.start))
			r.Posted = append(r.Posted, s.end.Sub(s.posted))
		}
	}
	r.PerSec = float64(r.Done) / l.Duration.Seconds()
	r.Late = int(late.Load())
	return r, nil
}

// Submit posts one command for line a to the operator API of to, with a
// deadline that far ahead, and waits up to wait for its result: a probe
// (does a command submitted to one replica reach an agent connected to
// another?) rather than a load.
func Submit(ctx context.Context, res Results, to Target, a Line, id string, deadline, wait time.Duration) (Finished, error) {
	hc := newHTTPClient(1)
	defer hc.CloseIdleConnections()
	s := submitOne(ctx, hc, res, to, a, id, time.Now(), wait, deadline)
	switch {
	case s.refused != "":
		return Finished{}, fmt.Errorf("fleetload: command %s refused: %s", id, s.refused)
	case s.timedOut:
		return Finished{}, fmt.Errorf("fleetload: command %s: %w", id, ErrNoResult)
	}
	return Finished{At: s.end, State: s.state}, nil
}

// ErrNoResult is Submit's error when no result was stored in time.
var ErrNoResult = errors.New("no result stored in time")

// submitOne posts one send_text for line a to the operator API of to and
// waits up to timeout for its result.
func submitOne(ctx context.Context, hc *http.Client, res Results, to Target, a Line, id string, due time.Time, timeout, deadline time.Duration) sample {
	cmd := &linev1.Command{
		Id: id, Line: a.Number,
		Target:   &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557770001"},
		Deadline: timestamppb.New(time.Now().Add(deadline)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "fleetload " + id}},
	}
	body, err := protojson.Marshal(cmd)
	if err != nil {
		return sample{start: due, refused: err.Error()}
	}
	ch := res.Expect(id)
	s := sample{start: due}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, "http://"+to.HTTPAddr+"/v1/commands", bytes.NewReader(body))
	if err != nil {
		res.Forget(id)
		s.refused = err.Error()
		return s
	}
	req.Header.Set("Content-Type", "application/json")
	s.posted = time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		res.Forget(id)
		s.refused = err.Error()
		return s
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		res.Forget(id)
		s.refused = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
		return s
	}
	select {
	case f := <-ch:
		s.end, s.state = f.At, f.State
	case <-rctx.Done():
		res.Forget(id)
		s.timedOut = true
	}
	return s
}

// newHTTPClient keeps a connection per client goroutine alive, so the run
// measures the API, not TCP handshakes.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute,
		DisableCompression: true,
	}}
}
