package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	_ "modernc.org/sqlite"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/relay"
	"github.com/line-agent/line-agent/relay/opclient"
)

func agentBackend(d messages.Driver, t agent.Tailer) agent.Backend {
	return agent.Backend{Name: "sim", Driver: d, Tailer: t, Lines: []string{benchLine}}
}

// arrivals records when each message GUID was first seen downstream.
type arrivals struct {
	mu   sync.Mutex
	seen map[string]time.Time
	wait map[string]chan time.Time
}

func newArrivals() *arrivals {
	return &arrivals{seen: map[string]time.Time{}, wait: map[string]chan time.Time{}}
}

func (a *arrivals) arrived(key string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.seen[key]; ok {
		return
	}
	a.seen[key] = at
	if ch := a.wait[key]; ch != nil {
		ch <- at
		delete(a.wait, key)
	}
}

// await returns a channel that gets the arrival time of key.
func (a *arrivals) await(key string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if at, ok := a.seen[key]; ok {
		ch <- at
	} else {
		a.wait[key] = ch
	}
	return ch
}

func newSimChatDB(ctx context.Context, dir string) (*sim.Store, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	st, err := sim.Create(filepath.Join(dir, "chat.db"), sim.WithLine(benchLine))
	if err != nil {
		return nil, "", err
	}
	c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		st.Close()
		return nil, "", err
	}
	return st, c.GUID, nil
}

// inboundOpts shapes one inbound run.
type inboundOpts struct {
	n        int
	backstop bool          // DisableWatcher, BackstopInterval 1 s
	gap      time.Duration // pause drawn uniformly in [0, gap) between inserts
	pipeline bool          // insert on schedule without waiting for the event
	timeout  time.Duration // per message
}

// runInbound measures from the commit of an incoming row (sim.Store.Insert
// returning) to the event stored at the relay (relay.Events long poll),
// through a real agent over loopback TLS.
func runInbound(ctx context.Context, dir string, o inboundOpts) ([]time.Duration, error) {
	st, chat, err := newSimChatDB(ctx, filepath.Join(dir, "messages"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	s, err := startRelay(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer s.close()
	topts := chatdb.TailerOptions{Path: st.Path(), Logger: discard, Line: benchLine}
	if o.backstop {
		topts.DisableWatcher, topts.BackstopInterval = true, time.Second
	}
	if err := s.startAgent(ctx, agentBackend(instantDriver{}, chatdb.NewTailer(topts))); err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond) // the tailer's baseline

	arr := newArrivals()
	stop := pollRelayEvents(ctx, s.relay, arr)
	defer stop()
	return insertAndMeasure(ctx, st, chat, arr, o)
}

// pollRelayEvents follows the relay's stored events with the operator
// API's long poll (relay.Events, in-process) and records when each message
// event arrived: the end point of row 1a, and 5b's baseline. stop ends it.
func pollRelayEvents(ctx context.Context, srv *relay.Server, arr *arrivals) (stop func()) {
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var after int64
		for pctx.Err() == nil {
			page, err := srv.Events(pctx, after, 1000, 5*time.Second)
			if err != nil {
				if pctx.Err() == nil {
					logf("relay events: %v", err) // the waits for its arrivals time out
				}
				return
			}
			at := time.Now()
			for _, v := range page.Events {
				e, err := opclient.Event(v)
				if err == nil && e.GetMessage() != nil {
					arr.arrived(e.GetMessageGuid(), at)
				}
			}
			after = page.Next
		}
	}()
	return func() { cancel(); <-done }
}

// insertAndMeasure writes o.n incoming rows and returns commit-to-arrival
// latencies, matched by message GUID.
func insertAndMeasure(ctx context.Context, st *sim.Store, chat string, arr *arrivals, o inboundOpts) ([]time.Duration, error) {
	rnd := rand.New(rand.NewPCG(1, 2))
	type sent struct {
		key string
		at  time.Time
	}
	var all []sent
	var lat []time.Duration
	for i := 0; i < o.n; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		row, err := st.Insert(ctx, sim.Msg{Chat: chat, Text: fmt.Sprintf("inbound %d", i)})
		at := time.Now()
		if err != nil {
			return nil, err
		}
		key := row.GUID
		if o.pipeline {
			all = append(all, sent{key, at})
		} else {
			select {
			case got := <-arr.await(key):
				lat = append(lat, got.Sub(at))
			case <-time.After(o.timeout):
				return nil, fmt.Errorf("message %d not seen within %v", i, o.timeout)
			}
		}
		time.Sleep(time.Duration(rnd.Int64N(int64(o.gap))))
	}
	for _, s := range all {
		select {
		case got := <-arr.await(s.key):
			lat = append(lat, got.Sub(s.at))
		case <-time.After(o.timeout):
			return nil, fmt.Errorf("message %s not seen within %v", s.key, o.timeout)
		}
	}
	return lat, nil
}

// runBareWatch is the baseline: the least an fsnotify reader can do. Watch
// the folder; on each event read MAX(ROWID); when nothing is new look again
// 1, 2 and 4 ms later (a WAL write can be seen before its commit).
func runBareWatch(ctx context.Context, dir string, o inboundOpts) ([]time.Duration, error) {
	st, chat, err := newSimChatDB(ctx, filepath.Join(dir, "messages"))
	if err != nil {
		return nil, err
	}
	defer st.Close()
	db, err := sql.Open("sqlite", "file:"+st.Path()+"?mode=ro&_pragma=query_only(1)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(st.Path())); err != nil {
		return nil, err
	}
	var last int64
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(ROWID),0) FROM message`).Scan(&last); err != nil {
		return nil, err
	}
	keyed := newArrivals()
	look := func() bool {
		var m int64
		if err := db.QueryRowContext(ctx, `SELECT coalesce(max(ROWID),0) FROM message`).Scan(&m); err != nil {
			return false
		}
		if m <= last {
			return false
		}
		at := time.Now()
		for id := last + 1; id <= m; id++ {
			keyed.arrived(fmt.Sprint(id), at)
		}
		last = m
		return true
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-wctx.Done():
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				if look() {
					continue
				}
				for _, d := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond} {
					time.Sleep(d)
					if look() {
						break
					}
				}
			case err, ok := <-w.Errors:
				if !ok || err != nil && !errors.Is(err, fsnotify.ErrEventOverflow) {
					return
				}
			}
		}
	}()
	defer func() { stop(); <-done }()
	return insertAndMeasureRowID(ctx, st, chat, keyed, o)
}

func insertAndMeasureRowID(ctx context.Context, st *sim.Store, chat string, arr *arrivals, o inboundOpts) ([]time.Duration, error) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	for i := 0; i < o.n; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		row, err := st.Insert(ctx, sim.Msg{Chat: chat, Text: fmt.Sprintf("inbound %d", i)})
		at := time.Now()
		if err != nil {
			return nil, err
		}
		select {
		case got := <-arr.await(fmt.Sprint(row.RowID)):
			lat = append(lat, max(0, got.Sub(at))) // seen before Insert returned: 0
		case <-time.After(o.timeout):
			return nil, fmt.Errorf("baseline: row %d not seen within %v", row.RowID, o.timeout)
		}
		time.Sleep(time.Duration(rnd.Int64N(int64(o.gap))))
	}
	return lat, nil
}
