package bridge

import (
	"encoding/json"
	"time"
)

// Event names. The first group is what the BlueBubbles helper emits; the
// progress event is a line-agent extension; EventHelperChanged is made by
// the bridge itself.
const (
	// EventPing is the helper's first line after it connects ("process"
	// names the app it runs in). The bridge consumes it.
	EventPing = "ping"
	// EventReady says IMCore is initialised in the helper (newer helpers
	// only). The bridge consumes it.
	EventReady = "ready"
	// EventStartedTyping, EventTyping and EventStoppedTyping report a remote
	// person's typing indicator in chat "guid".
	EventStartedTyping = "started-typing"
	EventTyping        = "typing"
	EventStoppedTyping = "stopped-typing"
	// EventAliasesRemoved: the iMessage account lost addresses (the line
	// may no longer be reachable); data.__kIMAccountAliasesRemovedKey.
	EventAliasesRemoved = "aliases-removed"
	// EventBackgroundProgress reports a chat background's upload
	// (line-agent extension). It is routed to the SetBackground call it
	// belongs to and only reaches Events() when no call claims it.
	EventBackgroundProgress = "background-transfer-progress"
	// EventHelperChanged is synthetic: a helper connected, finished its
	// handshake or went away, so Capabilities() and Health() changed. The
	// agent re-announces its capabilities to the relay on it.
	EventHelperChanged = "line-agent.helper-changed"
)

// Event is one notification from the helper.
type Event struct {
	// Name is the helper's "event" value (see the Event* constants; other
	// names pass through untouched).
	Name string
	// ChatGUID is the event's "guid", when it has one.
	ChatGUID string
	// Typing is true for started-typing and typing, false otherwise.
	Typing bool
	// Progress is set for EventBackgroundProgress.
	Progress *Progress
	// Data is the event's raw "data" field, if any.
	Data json.RawMessage
	// At is when the bridge read the event.
	At time.Time
}

// Progress is a stage of a background upload as the helper reports it.
type Progress struct {
	Stage string `json:"stage"`
	Done  uint64 `json:"done"`
	Total uint64 `json:"total"`
	// TransactionRef is the transactionId of the set-chat-background request
	// the progress belongs to.
	TransactionRef string `json:"transactionRef"`
}

// Events delivers helper notifications. The channel is bounded: when the
// reader falls behind, the oldest event is dropped (DroppedEvents counts
// them) so that the helper connection is never blocked by a slow consumer.
// It is closed by Close.
func (b *Bridge) Events() <-chan Event { return b.events }

// DroppedEvents is how many events were dropped because Events() was full.
func (b *Bridge) DroppedEvents() uint64 { return b.dropped.Load() }

// deliver queues ev, dropping the oldest queued event when full.
func (b *Bridge) deliver(ev Event) {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	b.evMu.Lock()
	defer b.evMu.Unlock()
	if b.evClosed {
		return
	}
	for range cap(b.events) + 1 {
		select {
		case b.events <- ev:
			return
		default:
		}
		select {
		case <-b.events:
			b.dropped.Add(1)
		default:
		}
	}
}

func (b *Bridge) closeEvents() {
	b.evMu.Lock()
	defer b.evMu.Unlock()
	if !b.evClosed {
		b.evClosed = true
		close(b.events)
	}
}
