package applescript

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/pkg/procid"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The osascript child is noted, alive and named by its start time, before
// it gets its script: at the note the fake has logged nothing (it logs
// once it has read standard input), so a crash right after the note leaves
// a child the next start can account for, and none before it.
func TestChildIsNotedBeforeItGetsTheScript(t *testing.T) {
	h := newHarness(t, nil, nil)
	var noted []procid.ID
	ctx := messages.WithAttemptNoter(context.Background(), func(a messages.Attempt) error {
		if a.Process == nil {
			t.Error("noted an attempt without its process")
			return nil
		}
		if n := len(h.records()); n != 0 {
			t.Errorf("the child had already run its script (%d records) when it was noted", n)
		}
		if alive, err := procid.Alive(*a.Process); !alive || err != nil {
			t.Errorf("the noted child is not alive at its note: %v, %v", alive, err)
		}
		noted = append(noted, *a.Process)
		return nil
	})
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	snap, err := h.sender.Execute(ctx, textTo(chatOne, "noted first"), func(*linev1.CommandUpdate) {})
	if err != nil {
		t.Fatal(err)
	}
	recs := h.records()
	if len(noted) != 1 || len(recs) != 1 || recs[0].Pid != noted[0].Pid {
		t.Fatalf("noted %+v, ran %+v: want the one run noted", noted, recs)
	}
	if h.rowText(snap.GetMessageGuid()) != "noted first" {
		t.Fatalf("the row of %s is not the text sent", snap.GetMessageGuid())
	}
	if alive, _ := procid.Alive(noted[0]); alive {
		t.Fatal("the child still counts as alive after its run ended")
	}
}

// A note that cannot be recorded stops the send before Messages gets
// anything: UNAVAILABLE, no script run, no row.
func TestUnrecordedChildSendsNothing(t *testing.T) {
	h := newHarness(t, nil, nil)
	ctx := messages.WithAttemptNoter(context.Background(), func(messages.Attempt) error {
		return errors.New("disk full")
	})
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err := h.sender.Execute(ctx, textTo(chatOne, "never sent"), func(*linev1.CommandUpdate) {})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNAVAILABLE)
	if recs := h.records(); len(recs) != 0 {
		t.Fatalf("the child ran its script although its note failed: %+v", recs)
	}
	if _, err := h.db.FindOutgoing(context.Background(), chatOne, "never sent", chatdb.Window{Since: time.Now().Add(-time.Minute)}); err == nil {
		t.Fatal("a row was written although the note failed")
	}
}
