package chatdb

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// missedWindow is how long a change caught by the backstop (a change the
// watcher missed) keeps the component DEGRADED.
const missedWindow = 10 * time.Minute

// failuresDown is how many scans in a row must fail before the component is
// DOWN rather than DEGRADED.
const failuresDown = 3

// healthState is what Health reports on. Guarded by Tailer.hmu.
type healthState struct {
	status linev1.HealthStatus
	since  time.Time

	openErr      error
	scanErr      error
	scanFailures int
	commitErr    error
	watcherWant  bool
	watcherArmed bool
	watcherErr   error
	missed       int
	lastMissed   time.Time
	rebases      int
	lastScan     time.Time
	lastEvent    time.Time
	events       uint64
	commits      uint64
	scans        uint64
}

func (h *healthState) init(now time.Time, watcher bool) {
	h.status, h.since, h.watcherWant = linev1.HealthStatus_HEALTH_STATUS_DOWN, now, watcher
	h.openErr = fmt.Errorf("not started")
}

func (h *healthState) opened(mu *sync.Mutex, now time.Time, err error) {
	mu.Lock()
	defer mu.Unlock()
	h.openErr = err
}

func (h *healthState) scanned(mu *sync.Mutex, now time.Time, err error) {
	mu.Lock()
	defer mu.Unlock()
	h.scans++
	h.scanErr = err
	if err != nil {
		h.scanFailures++
	} else {
		h.scanFailures = 0
		h.lastScan = now
	}
}

func (h *healthState) committed(mu *sync.Mutex, now time.Time, events int, err error) {
	mu.Lock()
	defer mu.Unlock()
	h.commitErr = err
	if err == nil {
		h.commits++
		h.events += uint64(events)
		if events > 0 {
			h.lastEvent = now
		}
	}
}

func (h *healthState) backstopCaught(mu *sync.Mutex, now time.Time) {
	mu.Lock()
	defer mu.Unlock()
	h.missed++
	h.lastMissed = now
}

func (h *healthState) rebased(mu *sync.Mutex, now time.Time) {
	mu.Lock()
	defer mu.Unlock()
	h.rebases++
}

// watcher returns the callback through which the watcher reports its state.
func (h *healthState) watcher(mu *sync.Mutex, clock func() time.Time) func(bool, error) {
	return func(armed bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		h.watcherArmed, h.watcherErr = armed, err
	}
}

// Health reports the chat.db component: DOWN when chat.db cannot be opened
// or read, DEGRADED when it works with a weakness an operator should see
// (no file watcher, changes the watcher missed in the last 10 minutes,
// commits failing), OK otherwise. The detail says which.
func (t *Tailer) Health() *linev1.HealthComponent {
	t.hmu.Lock()
	defer t.hmu.Unlock()
	h := &t.h
	now := t.opts.Clock()
	var status linev1.HealthStatus
	var notes []string
	switch {
	case h.openErr != nil:
		status = linev1.HealthStatus_HEALTH_STATUS_DOWN
		notes = append(notes, "cannot open chat.db: "+h.openErr.Error())
	case h.scanFailures >= failuresDown:
		status = linev1.HealthStatus_HEALTH_STATUS_DOWN
		notes = append(notes, fmt.Sprintf("%d reads of chat.db failed in a row: %v", h.scanFailures, h.scanErr))
	default:
		status = linev1.HealthStatus_HEALTH_STATUS_OK
		degrade := func(s string) {
			status = linev1.HealthStatus_HEALTH_STATUS_DEGRADED
			notes = append(notes, s)
		}
		if h.scanErr != nil {
			degrade("last read of chat.db failed: " + h.scanErr.Error())
		}
		if h.commitErr != nil {
			degrade("storing events failed: " + h.commitErr.Error())
		}
		switch {
		case !h.watcherWant:
			degrade("file watcher disabled; relying on the 1 s data_version backstop")
		case !h.watcherArmed:
			msg := "file watcher not armed"
			if h.watcherErr != nil {
				msg += ": " + h.watcherErr.Error()
			}
			degrade(msg)
		}
		if h.missed > 0 && now.Sub(h.lastMissed) < missedWindow {
			degrade(fmt.Sprintf("backstop found changes the watcher missed: %d times, last at %s", h.missed, h.lastMissed.UTC().Format(time.RFC3339)))
		}
	}
	if status == linev1.HealthStatus_HEALTH_STATUS_OK {
		notes = append(notes, "following "+t.opts.Path)
	}
	if h.missed > 0 && status == linev1.HealthStatus_HEALTH_STATUS_OK {
		notes = append(notes, fmt.Sprintf("backstop caught %d missed changes in total, last at %s", h.missed, h.lastMissed.UTC().Format(time.RFC3339)))
	}
	if h.rebases > 0 {
		notes = append(notes, fmt.Sprintf("chat.db replaced %d times", h.rebases))
	}
	if !h.lastScan.IsZero() {
		notes = append(notes, "last read "+h.lastScan.UTC().Format(time.RFC3339))
	}
	notes = append(notes, fmt.Sprintf("%d events", h.events))
	if status != h.status {
		h.status, h.since = status, now
	}
	return &linev1.HealthComponent{Name: "chatdb", Status: status, Detail: strings.Join(notes, "; "), Since: timestamppb.New(h.since)}
}

// TailerStats are counters for tests and `line-agent status`.
type TailerStats struct {
	Scans, Commits, Events uint64
	// BackstopCatches counts backstop checks that found changes no file
	// event had announced.
	BackstopCatches int
	Rebases         int
}

// Stats returns the Tailer's counters.
func (t *Tailer) Stats() TailerStats {
	t.hmu.Lock()
	defer t.hmu.Unlock()
	return TailerStats{Scans: t.h.scans, Commits: t.h.commits, Events: t.h.events, BackstopCatches: t.h.missed, Rebases: t.h.rebases}
}
