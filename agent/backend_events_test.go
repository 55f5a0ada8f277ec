package agent

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A backend's own event lands in the journal's outbox with the next
// sequence, and chat.db's cursor stays where it was.
func TestBackendEventsReachTheOutbox(t *testing.T) {
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx, cancel := context.WithCancel(context.Background())
	if err := j.Commit(ctx, nil, []byte("cursor-1")); err != nil {
		t.Fatal(err)
	}
	evs := make(chan *linev1.Event, 1)
	done := make(chan struct{})
	go func() { pumpEvents(ctx, evs, j, testLogger(t)); close(done) }()
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	evs <- &linev1.Event{Key: "agent/messages_restarted/" + at.Format(time.RFC3339Nano), Date: timestamppb.New(at),
		Payload: &linev1.Event_MessagesRestarted{MessagesRestarted: &linev1.MessagesRestartedEvent{Reason: "3 osascript runs in a row timed out", Outcome: "quit and reopened", Running: true}}}
	deadline := time.Now().Add(5 * time.Second)
	var got []*linev1.Event
	for len(got) == 0 && time.Now().Before(deadline) {
		if got, err = j.EventsAfter(context.Background(), 0, 10); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if len(got) != 1 || got[0].GetSequence() != 1 || got[0].GetMessagesRestarted().GetOutcome() != "quit and reopened" {
		t.Fatalf("outbox %v; want the restart as event 1", got)
	}
	if c, err := j.Cursor(context.Background()); err != nil || string(c) != "cursor-1" {
		t.Fatalf("cursor %q %v; want it unchanged", c, err)
	}
}
