package agent

import (
	"context"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// TestKilledAgentForgetsCommandsThatNeverStarted leaves state.db as a kill -9
// leaves it: one command in Messages' hands, two accepted behind it (other
// chats, waiting for the one running slot). The next start must settle only
// the started one IN_DOUBT and forget the other two, so the relay's
// redelivery runs them.
func TestKilledAgentForgetsCommandsThatNeverStarted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	drv := &countingDriver{gate: make(chan struct{})}
	runCtx, kill := context.WithCancel(ctx)
	out := newFrames()
	d := NewDispatcher(runCtx, DispatcherOptions{Driver: drv, Journal: j, Emit: out.emit, Lines: []string{testLine},
		MaxChats: 1, Logger: testLogger(t)})
	started, waiting1, waiting2 := sendText("k-1"), sendText("k-2"), sendText("k-3")
	waiting1.Target = &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557650002"}
	waiting2.Target = &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557650003"}
	d.Submit(ctx, started)
	drv.waitRun(t, "k-1", 5*time.Second)
	d.Submit(ctx, waiting1)
	d.Submit(ctx, waiting2)
	// ACCEPTED is answered once the journal has recorded the command.
	out.waitFor(t, 5*time.Second, "k-2 and k-3 recorded", func(all []*linev1.AgentFrame) bool {
		return len(updates(all, "k-2")) > 0 && len(updates(all, "k-3")) > 0
	})
	for _, id := range []string{"k-2", "k-3"} {
		if rec, err := j.Lookup(ctx, id); err != nil || rec == nil || rec.State != stateAccepted {
			t.Fatalf("%s answered ACCEPTED but recorded %+v %v", id, rec, err)
		}
	}

	// kill -9: nothing after this point reaches state.db.
	j.Close()
	kill()
	d.Wait()

	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	settled, resume, err := j.SettleInterrupted(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(settled) != 1 || settled[0] != "k-1" || len(resume) != 0 {
		t.Fatalf("settled %v (resume %d); want only the started k-1 IN_DOUBT", settled, len(resume))
	}
	for _, id := range []string{"k-2", "k-3"} {
		if rec, err := j.Lookup(ctx, id); err != nil || rec != nil {
			t.Fatalf("%s, which never started, is still known after the restart: %+v %v", id, rec, err)
		}
	}
	if drv.count("k-2")+drv.count("k-3") != 0 {
		t.Fatal("a waiting command reached the driver")
	}
}

// TestJournalCommandStates: accepted, then running from just before the
// driver, then done. A restart forgets what was only accepted, settles what
// was running IN_DOUBT and hands back what was running with a checkpoint.
func TestJournalCommandStates(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := j.BeginMany(ctx, []*linev1.Command{testCommand("queued"), testCommand("sending"), testCommand("uploading"), testCommand("done")}, false, 0)
	if err != nil || len(recs) != 4 || recs[0] != nil {
		t.Fatalf("BeginMany = %v, %v", recs, err)
	}
	if rec, _ := j.Lookup(ctx, "queued"); rec == nil || rec.State != stateAccepted {
		t.Fatalf("a queued command is %+v, want accepted", rec)
	}
	for _, id := range []string{"sending", "uploading", "done"} {
		if err := j.Start(id, -1); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Start("sending", -1); err == nil {
		t.Fatal("a second Start of one command succeeded")
	}
	if rec, _ := j.Lookup(ctx, "sending"); rec == nil || rec.State != stateRunning {
		t.Fatalf("a started command is %+v, want running", rec)
	}
	if err := j.SaveCheckpoint("uploading", []byte("asset-1")); err != nil {
		t.Fatal(err)
	}
	if err := j.Finish(ctx, &linev1.CommandResult{CommandId: "done", Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: "G"}}}); err != nil {
		t.Fatal(err)
	}
	j.Close() // the process dies here

	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	forgotten, err := j.ForgetUnstarted(ctx)
	if err != nil || len(forgotten) != 1 || forgotten[0] != "queued" {
		t.Fatalf("ForgetUnstarted = %v, %v; want [queued]", forgotten, err)
	}
	settled, resume, err := j.SettleInterrupted(ctx, func(*linev1.Command) bool { return true })
	if err != nil || len(settled) != 1 || settled[0] != "sending" || len(resume) != 1 || resume[0].Command.GetId() != "uploading" || string(resume[0].Checkpoint) != "asset-1" {
		t.Fatalf("SettleInterrupted = %v, %v, %v; want sending IN_DOUBT and uploading resumed", settled, resume, err)
	}
	if rec, _ := j.Lookup(ctx, "queued"); rec != nil {
		t.Fatalf("the never-started command is still known: %+v", rec)
	}
	if rec, _ := j.Lookup(ctx, "sending"); rec.Result.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_IN_DOUBT {
		t.Fatalf("the started command: %+v, want IN_DOUBT", rec.Result)
	}
	if rec, _ := j.Lookup(ctx, "done"); rec.Result.GetSnapshot().GetMessageGuid() != "G" {
		t.Fatalf("the finished command: %+v", rec.Result)
	}
}

// A redelivered id that is queued, not started, is answered ACCEPTED.
func TestRedeliveredQueuedCommandAnsweredAccepted(t *testing.T) {
	ctx := context.Background()
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	drv := &countingDriver{gate: make(chan struct{})}
	runCtx, cancel := context.WithCancel(ctx)
	out := newFrames()
	d := NewDispatcher(runCtx, DispatcherOptions{Driver: drv, Journal: j, Emit: out.emit, Lines: []string{testLine}, MaxChats: 1, Logger: testLogger(t)})
	defer func() { cancel(); d.Wait() }()
	d.Submit(ctx, sendText("r-1"))
	drv.waitRun(t, "r-1", 5*time.Second)
	queued := sendText("r-2") // another chat, waiting for the one running slot
	queued.Target = &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557650002"}
	d.Submit(ctx, queued)
	// ACCEPTED is answered once the journal has recorded the command.
	out.waitFor(t, 5*time.Second, "r-2 recorded", func(all []*linev1.AgentFrame) bool { return len(updates(all, "r-2")) > 0 })
	if rec, _ := j.Lookup(ctx, "r-2"); rec == nil {
		t.Fatal("r-2 answered ACCEPTED but not recorded")
	}
	d.Submit(ctx, queued)
	var ups []linev1.CommandState
	out.waitFor(t, 5*time.Second, "two answers for r-2", func(all []*linev1.AgentFrame) bool {
		ups = updates(all, "r-2")
		return len(ups) >= 2
	})
	for _, s := range ups {
		if s != linev1.CommandState_COMMAND_STATE_ACCEPTED {
			t.Fatalf("answers for the queued r-2: %v; want ACCEPTED", ups)
		}
	}
	if drv.count("r-2") != 0 {
		t.Fatal("r-2 ran while r-1 held its chat")
	}
	close(drv.gate)
	out.result(t, "r-2", 5*time.Second)
	if drv.count("r-2") != 1 {
		t.Fatalf("r-2 ran %d times", drv.count("r-2"))
	}
}
