package fleetload

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Finished is a command's result as the relay stored it.
type Finished struct {
	// At is when the relay had stored the result.
	At time.Time
	// State is the stored final state: "succeeded" or "failed".
	State string
}

// Results tells a submitter when a command's result is stored. Expect is
// called before the command is submitted, so no result can be missed;
// the channel gets one value.
type Results interface {
	Expect(id string) <-chan Finished
	// Forget drops an expectation that will not be waited for any more.
	Forget(id string)
}

// FinishLog is a Results that reads line-relay's log: the relay writes
// "command finished" (with command_id and state) right after the result
// is stored, so the time of that record is the end of submit-to-result,
// with nothing polling the relay meanwhile. Give it to every in-process
// relay under test as its Options.Logger handler (slog.New(log)); all
// other records are dropped. One FinishLog may serve several relays.
type FinishLog struct {
	mu    sync.Mutex
	waits map[string]chan Finished
}

// NewFinishLog returns an empty FinishLog.
func NewFinishLog() *FinishLog { return &FinishLog{waits: map[string]chan Finished{}} }

var _ slog.Handler = (*FinishLog)(nil)
var _ Results = (*FinishLog)(nil)

// Enabled takes info and above: "command finished" is an info record.
func (h *FinishLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

// WithAttrs keeps h: the records it needs carry their own attributes.
func (h *FinishLog) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup keeps h, for the same reason.
func (h *FinishLog) WithGroup(string) slog.Handler { return h }

// Handle hands a "command finished" record to its waiter.
func (h *FinishLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "command finished" {
		return nil
	}
	at := time.Now()
	var id, state string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "command_id":
			id = a.Value.String()
		case "state":
			state = a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	ch := h.waits[id]
	delete(h.waits, id)
	h.mu.Unlock()
	if ch != nil {
		ch <- Finished{At: at, State: state}
	}
	return nil
}

// Expect registers interest in id's result.
func (h *FinishLog) Expect(id string) <-chan Finished {
	ch := make(chan Finished, 1)
	h.mu.Lock()
	h.waits[id] = ch
	h.mu.Unlock()
	return ch
}

// Forget drops id's waiter.
func (h *FinishLog) Forget(id string) {
	h.mu.Lock()
	delete(h.waits, id)
	h.mu.Unlock()
}
