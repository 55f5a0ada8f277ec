package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func testCommand(id string) *linev1.Command {
	return &linev1.Command{Id: id, Line: "+15550000001", Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15551234567"},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi"}}}
}

func TestJournalRecordsCommandOnceAndSettlesInterrupted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := j.Begin(ctx, testCommand("a")); err != nil || rec != nil {
		t.Fatalf("first Begin = %v, %v; want new", rec, err)
	}
	rec, err := j.Begin(ctx, testCommand("a"))
	if err != nil || rec == nil || rec.State != stateAccepted {
		t.Fatalf("second Begin = %+v, %v; want the accepted record", rec, err)
	}
	if err := j.Start("a", -1); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Begin(ctx, testCommand("b")); err != nil {
		t.Fatal(err)
	}
	done := &linev1.CommandResult{CommandId: "b", Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: "G"}}}
	if err := j.Finish(ctx, done); err != nil {
		t.Fatal(err)
	}
	j.Close()

	// A new process: "a" was running when the old one died.
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ids, _, err := j.SettleInterrupted(ctx, nil)
	if err != nil || len(ids) != 1 || ids[0] != "a" {
		t.Fatalf("SettleInterrupted = %v, %v; want [a]", ids, err)
	}
	rec, _ = j.Lookup(ctx, "a")
	if rec.Result.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_IN_DOUBT {
		t.Fatalf("interrupted command result %v, want IN_DOUBT", rec.Result)
	}
	rec, _ = j.Lookup(ctx, "b")
	if rec.Result.GetSnapshot().GetMessageGuid() != "G" {
		t.Fatalf("finished command lost its result: %v", rec.Result)
	}
}

func TestJournalOutboxSequencesAcksAndBound(t *testing.T) {
	ctx := context.Background()
	j, err := OpenJournal(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ev := func(k string) *linev1.Event { return &linev1.Event{Key: k, MessageGuid: k} }
	if err := j.Commit(ctx, []*linev1.Event{ev("k1"), ev("k2"), ev("k1")}, []byte("c1")); err != nil {
		t.Fatal(err)
	}
	if err := j.Commit(ctx, []*linev1.Event{ev("k3")}, []byte("c2")); err != nil {
		t.Fatal(err)
	}
	evs, _ := j.EventsAfter(ctx, 0, 10)
	if len(evs) != 3 || evs[0].Sequence != 1 || evs[2].Sequence != 3 || evs[2].Key != "k3" {
		t.Fatalf("outbox %v; want k1,k2,k3 with sequences 1..3 and the duplicate key dropped", evs)
	}
	if c, _ := j.Cursor(ctx); string(c) != "c2" {
		t.Fatalf("cursor %q, want c2", c)
	}
	// Full: Commit waits until an ack makes room.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err = j.Commit(short, []*linev1.Event{ev("k4")}, []byte("c3"))
	cancel()
	if err == nil {
		t.Fatal("Commit into a full outbox did not wait")
	}
	if c, _ := j.Cursor(ctx); string(c) != "c2" {
		t.Fatalf("a refused Commit moved the cursor to %q", c)
	}
	if err := j.Ack(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := j.Commit(ctx, []*linev1.Event{ev("k4")}, []byte("c3")); err != nil {
		t.Fatal(err)
	}
	evs, _ = j.EventsAfter(ctx, 2, 10)
	if len(evs) != 2 || evs[1].Sequence != 4 {
		t.Fatalf("after ack: %v; want sequences 3,4", evs)
	}
	// Sequences never go back, even when the outbox empties.
	j.Ack(ctx, 4)
	j.Commit(ctx, []*linev1.Event{ev("k5")}, nil)
	evs, _ = j.EventsAfter(ctx, 0, 10)
	if len(evs) != 1 || evs[0].Sequence != 5 {
		t.Fatalf("after emptying: %v; want sequence 5", evs)
	}
	if a, _ := j.Acked(ctx); a != 4 {
		t.Fatalf("Acked = %d, want 4", a)
	}
	j.Ack(ctx, 1) // a stale ack never moves the resume point back
	if a, _ := j.Acked(ctx); a != 4 {
		t.Fatalf("Acked after stale ack = %d, want 4", a)
	}
	_ = fmt.Sprint()
}

// Two spellings of one participant are one chat, so their commands run in
// order, one after another (issue 8 item 10).
func TestChatKeyIgnoresHandleSpelling(t *testing.T) {
	k := func(hs ...string) string {
		return chatKey(&linev1.Command{Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: hs}}})
	}
	if a, b := k("Alice@Example.com"), k("alice@example.com"); a != b {
		t.Fatalf("%q != %q", a, b)
	}
	if a, b := k("+1 (555) 765-4321"), k("+15557654321"); a != b {
		t.Fatalf("%q != %q", a, b)
	}
}

// TestJournalWritesAfterCloseFail: a write after Close, waited for or not,
// fails with ErrJournalClosed and writes nothing.
func TestJournalWritesAfterCloseFail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *Journal {
		j, err := OpenJournal(dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	j := open()
	j.Close()
	if _, err := j.Begin(ctx, testCommand("late")); !errors.Is(err, ErrJournalClosed) {
		t.Fatalf("Begin after Close: %v; want ErrJournalClosed", err)
	}
	heard := make(chan error, 1)
	j.FinishAsync(&linev1.CommandResult{CommandId: "late"}, func(err error) { heard <- err })
	if err := <-heard; !errors.Is(err, ErrJournalClosed) {
		t.Fatalf("FinishAsync after Close: done heard %v; want ErrJournalClosed", err)
	}
	j = open()
	defer j.Close()
	if rec, err := j.Lookup(ctx, "late"); err != nil || rec != nil {
		t.Fatalf("a write after Close landed: %+v, %v", rec, err)
	}
}
