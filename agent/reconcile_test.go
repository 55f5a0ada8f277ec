package agent

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/procid"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

const reconcilePeer = "+15557654321"

// crashed is a state.db an earlier process left as kill -9 leaves it, the
// simulated Messages' chat.db beside it, and a reconciler for the next
// start over a real chat.db reader.
type crashed struct {
	t     *testing.T
	dir   string
	j     *Journal
	store *sim.Store
	chat  sim.Chat
	rec   *reconciler
}

func newCrashed(t *testing.T, settle, wait time.Duration) *crashed {
	t.Helper()
	dir := t.TempDir()
	st, err := sim.Create(filepath.Join(dir, "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	chat, err := st.EnsureChat(context.Background(), sim.ChatSpec{Participants: []string{reconcilePeer}})
	if err != nil {
		t.Fatal(err)
	}
	j, err := OpenJournal(filepath.Join(dir, "agent"), 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &crashed{t: t, dir: dir, j: j, store: st, chat: chat}
	return c.restartWith(settle, wait)
}

// running records cmd as the earlier process did just before its driver
// ran, with chat.db's newest row as its mark and the attempt its driver
// noted (nil: none).
func (c *crashed) running(cmd *linev1.Command, a *messages.Attempt) {
	c.t.Helper()
	r, err := chatdb.Open(c.store.Path(), chatdb.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	defer r.Close()
	mark, err := r.NewestRowID(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	c.runningAt(cmd, a, mark)
}

// runningAt is running with the mark given: -1 is a start recorded before
// journals kept marks.
func (c *crashed) runningAt(cmd *linev1.Command, a *messages.Attempt, mark int64) {
	c.t.Helper()
	if recs, err := c.j.BeginMany(context.Background(), []*linev1.Command{cmd}, true, mark); err != nil || recs[0] != nil {
		c.t.Fatalf("BeginMany: %v %v", recs, err)
	}
	if a != nil {
		if err := c.j.NoteAttempt(cmd.GetId(), *a); err != nil {
			c.t.Fatal(err)
		}
	}
}

// done records cmd finished with snap, as a command before the crash.
func (c *crashed) done(cmd *linev1.Command, snap *linev1.Snapshot) {
	c.t.Helper()
	c.running(cmd, nil)
	if err := c.j.Finish(context.Background(), &linev1.CommandResult{CommandId: cmd.GetId(), Outcome: &linev1.CommandResult_Snapshot{Snapshot: snap}}); err != nil {
		c.t.Fatal(err)
	}
}

// restartWith closes state.db (the crash) and opens it again with a new
// reconciler, as the next start does.
func (c *crashed) restartWith(settle, wait time.Duration) *crashed {
	c.t.Helper()
	if c.rec != nil {
		c.j.Close()
		j, err := OpenJournal(filepath.Join(c.dir, "agent"), 0)
		if err != nil {
			c.t.Fatal(err)
		}
		c.j = j
	}
	j := c.j
	c.t.Cleanup(func() { j.Close() })
	r, err := chatdb.Open(c.store.Path(), chatdb.Options{Logger: testLogger(c.t)})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { r.Close() })
	c.rec = newReconciler(confirm.New(r, confirm.Options{}), c.j, testLogger(c.t), settle, wait)
	return c
}

// first runs the start's look and returns what the journal now says of id.
func (c *crashed) first(id string) *CommandRecord {
	c.t.Helper()
	if err := c.rec.first(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	rec, err := c.j.Lookup(context.Background(), id)
	if err != nil || rec == nil {
		c.t.Fatalf("Lookup %s: %v %v", id, rec, err)
	}
	return rec
}

func (c *crashed) text(id, text string) *linev1.Command {
	return &linev1.Command{Id: id, Line: testLine, Target: &linev1.Command_ChatGuid{ChatGuid: c.chat.GUID},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: text}}}
}

func wantCode(t *testing.T, rec *CommandRecord, code linev1.ErrorCode) string {
	t.Helper()
	if rec.State != stateDone || rec.Result.GetError().GetCode() != code {
		t.Fatalf("%s: state %s result %v; want %s", rec.ID, rec.State, rec.Result, code)
	}
	return rec.Result.GetError().GetMessage()
}

// An interrupted send whose row chat.db has, sent, succeeds at start with
// that row's snapshot; the redelivery is answered from the journal.
func TestReconcileInterruptedSendFoundSucceeds(t *testing.T) {
	c := newCrashed(t, time.Hour, time.Hour)
	cmd := c.text("r-found", "on my way")
	c.running(cmd, nil)
	row, err := c.store.Insert(context.Background(), sim.Msg{Chat: c.chat.GUID, FromMe: true, Text: "on my way", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	rec := c.restartWith(time.Hour, time.Hour).first("r-found")
	if rec.State != stateDone || rec.Result.GetSnapshot().GetMessageGuid() != row.GUID || rec.Result.GetSnapshot().GetChatGuid() != c.chat.GUID {
		t.Fatalf("record %s %v; want succeeded with %s", rec.State, rec.Result, row.GUID)
	}
	if len(c.rec.waiting) != 0 {
		t.Fatalf("a found command is left waiting")
	}
}

// No row, and the settling time passed with nothing left that could send
// it: NOT_SENT, through the background re-check, which the dispatcher
// sends; meanwhile a redelivery is answered IN_PROGRESS and never run.
func TestReconcileAbsentSendIsNotSentOnceSettled(t *testing.T) {
	c := newCrashed(t, 0, 0)
	cmd := c.text("r-absent", "never written")
	c.running(cmd, &messages.Attempt{Process: &procid.ID{Pid: 1 << 22, Start: "gone"}})
	c.restartWith(300*time.Millisecond, time.Minute)
	if rec := c.first("r-absent"); rec.State != stateReconciling {
		t.Fatalf("before the settling time passed: %s %v; want reconciling", rec.State, rec.Result)
	}
	// SettleInterrupted, which runs next at start, leaves it alone.
	if settled, _, err := c.j.SettleInterrupted(context.Background(), nil); err != nil || len(settled) != 0 {
		t.Fatalf("SettleInterrupted settled %v, %v", settled, err)
	}
	drv := &countingDriver{}
	out := newFrames()
	runCtx, cancel := context.WithCancel(context.Background())
	d := NewDispatcher(runCtx, DispatcherOptions{Driver: drv, Journal: c.j, Emit: out.emit, Lines: []string{testLine}, Logger: testLogger(t)})
	defer func() { cancel(); d.Wait() }()
	began := time.Now()
	c.rec.background(runCtx, d)
	d.Submit(context.Background(), cmd)
	out.waitFor(t, 5*time.Second, "IN_PROGRESS for the redelivery", func(all []*linev1.AgentFrame) bool {
		for _, f := range all {
			if u := f.GetUpdate(); u.GetCommandId() == "r-absent" && strings.Contains(u.GetDetail(), "reconciling") {
				return true
			}
		}
		return false
	})
	res := out.result(t, "r-absent", 10*time.Second)
	if res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_NOT_SENT {
		t.Fatalf("result %v; want NOT_SENT", res)
	}
	if took := time.Since(began); took < 250*time.Millisecond {
		t.Fatalf("NOT_SENT after %v, before the settling time", took)
	}
	if strings.Contains(res.GetError().GetMessage(), "never written") {
		t.Fatalf("the error repeats the message text: %s", res.GetError().GetMessage())
	}
	if drv.runs["r-absent"] != 0 {
		t.Fatalf("the interrupted command ran again")
	}
	if !eventually(5*time.Second, func() bool {
		rec, _ := c.j.Lookup(context.Background(), "r-absent")
		return rec != nil && rec.State == stateDone
	}) {
		t.Fatal("NOT_SENT never recorded")
	}
}

// Two identical texts in the chat since the command started, neither a
// recorded result's: IN_DOUBT naming both (a start without a chat.db mark,
// judged by dates); with the mark, the one from before the start is not
// the command's; with one a finished command's, the other is this
// command's.
func TestReconcileIdenticalTexts(t *testing.T) {
	c := newCrashed(t, time.Hour, time.Hour)
	ctx := context.Background()
	earlier := c.text("r-earlier", "ok")
	a, err := c.store.Insert(ctx, sim.Msg{Chat: c.chat.GUID, FromMe: true, Text: "ok", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	cmd := c.text("r-twin", "ok")
	c.runningAt(cmd, nil, -1)
	marked := c.text("r-marked", "ok")
	c.running(marked, nil)
	b, err := c.store.Insert(ctx, sim.Msg{Chat: c.chat.GUID, FromMe: true, Text: "ok", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	msg := wantCode(t, c.restartWith(time.Hour, time.Hour).first("r-twin"), linev1.ErrorCode_ERROR_CODE_IN_DOUBT)
	if !strings.Contains(msg, a.GUID) || !strings.Contains(msg, b.GUID) {
		t.Fatalf("IN_DOUBT does not name both rows: %s", msg)
	}
	if rec := c.first("r-marked"); rec.State != stateDone || rec.Result.GetSnapshot().GetMessageGuid() != b.GUID {
		t.Fatalf("with the mark: %s %v; want succeeded with %s, the row after the mark", rec.State, rec.Result, b.GUID)
	}

	c2 := newCrashed(t, time.Hour, time.Hour)
	a2, err := c2.store.Insert(ctx, sim.Msg{Chat: c2.chat.GUID, FromMe: true, Text: "ok", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	c2.done(earlier, &linev1.Snapshot{MessageGuid: a2.GUID, ChatGuid: c2.chat.GUID})
	c2.running(c2.text("r-twin", "ok"), nil)
	b2, err := c2.store.Insert(ctx, sim.Msg{Chat: c2.chat.GUID, FromMe: true, Text: "ok", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	if rec := c2.restartWith(time.Hour, time.Hour).first("r-twin"); rec.Result.GetSnapshot().GetMessageGuid() != b2.GUID {
		t.Fatalf("with the first text a recorded result's: %v; want %s", rec.Result, b2.GUID)
	}
}

// A tapback, an edit and an unsend interrupted after Messages made them
// succeed with the row they changed.
func TestReconcileTapbackEditUnsendFound(t *testing.T) {
	c := newCrashed(t, time.Hour, time.Hour)
	ctx := context.Background()
	theirs, err := c.store.Insert(ctx, sim.Msg{Chat: c.chat.GUID, Text: "dinner?"})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := c.store.Insert(ctx, sim.Msg{Chat: c.chat.GUID, FromMe: true, Text: "tpyo", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	target := &linev1.Command_ChatGuid{ChatGuid: c.chat.GUID}
	react := &linev1.Command{Id: "r-react", Line: testLine, Target: target,
		Kind: &linev1.Command_React{React: &linev1.React{MessageGuid: theirs.GUID, Reaction: &linev1.React_Tapback{Tapback: "laugh"}}}}
	edit := &linev1.Command{Id: "r-edit", Line: testLine, Target: target,
		Kind: &linev1.Command_Edit{Edit: &linev1.Edit{MessageGuid: mine.GUID, Text: "typo"}}}
	other, err := c.store.Insert(ctx, sim.Msg{Chat: c.chat.GUID, FromMe: true, Text: "oops", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	unsend := &linev1.Command{Id: "r-unsend", Line: testLine, Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654999"},
		Kind: &linev1.Command_Unsend{Unsend: &linev1.Unsend{MessageGuid: other.GUID}}}
	for _, cmd := range []*linev1.Command{react, edit, unsend} {
		c.running(cmd, nil)
	}
	tb, err := c.store.Insert(ctx, sim.Msg{Chat: c.chat.GUID, FromMe: true, Sent: true, Tapback: &sim.Tapback{Target: theirs.GUID, Code: 2003}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.store.Edit(ctx, mine.GUID, 0, "typo"); err != nil {
		t.Fatal(err)
	}
	if err := c.store.Unsend(ctx, other.GUID, 0); err != nil {
		t.Fatal(err)
	}
	c.restartWith(time.Hour, time.Hour)
	for id, guid := range map[string]string{"r-react": tb.GUID, "r-edit": mine.GUID, "r-unsend": other.GUID} {
		if rec := c.first(id); rec.State != stateDone || rec.Result.GetSnapshot().GetMessageGuid() != guid {
			t.Errorf("%s: %s %v; want succeeded with %s", id, rec.State, rec.Result, guid)
		}
	}
}

// chat.db that cannot be read (gone, as when Full Disk Access is revoked)
// decides nothing: IN_DOUBT at once, with the reason.
func TestReconcileUnreadableChatDBIsInDoubt(t *testing.T) {
	c := newCrashed(t, time.Hour, time.Hour)
	c.running(c.text("r-blind", "hello"), nil)
	c.restartWith(time.Hour, time.Hour)
	c.store.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(c.store.Path() + suffix); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	msg := wantCode(t, c.first("r-blind"), linev1.ErrorCode_ERROR_CODE_IN_DOUBT)
	if !strings.Contains(msg, "chat.db could not be read") {
		t.Fatalf("IN_DOUBT without the reason: %s", msg)
	}
}

// An osascript run still alive can still make Messages send: the command
// waits while it lives; once it is gone and the settling time has passed
// with no row, NOT_SENT. One that outlives the wait is IN_DOUBT naming it.
func TestReconcileWaitsForALiveChild(t *testing.T) {
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	id, err := procid.Of(child.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	c := newCrashed(t, time.Hour, time.Hour)
	c.running(c.text("r-child", "held"), &messages.Attempt{Process: &id})
	clock := time.Now()
	c.restartWith(time.Second, time.Minute).rec.now = func() time.Time { return clock }
	if rec := c.first("r-child"); rec.State != stateReconciling {
		t.Fatalf("with its child alive: %s %v", rec.State, rec.Result)
	}
	w := c.rec.waiting[0]
	clock = clock.Add(30 * time.Second)
	if res := c.rec.check(context.Background(), w); res != nil || !strings.Contains(w.seen, "still runs") {
		t.Fatalf("child alive, past the settling time: %v (seen %q); want to wait", res, w.seen)
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	if res := c.rec.check(context.Background(), w); res != nil {
		t.Fatalf("the child just went: %v; want the settling time first", res)
	}
	clock = clock.Add(2 * time.Second)
	if res := c.rec.check(context.Background(), w); res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_NOT_SENT {
		t.Fatalf("child gone, settled, no row: %v; want NOT_SENT", res)
	}

	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	oid, err := procid.Of(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	c.running(c.text("r-stuck", "held too"), &messages.Attempt{Process: &oid})
	c.restartWith(time.Second, time.Minute).rec.now = func() time.Time { return clock }
	if rec := c.first("r-stuck"); rec.State != stateReconciling {
		t.Fatalf("r-stuck: %s", rec.State)
	}
	clock = clock.Add(2 * time.Minute)
	var stuck *waitingCommand
	for _, w := range c.rec.waiting {
		if w.u.cmd.GetId() == "r-stuck" {
			stuck = w
		}
	}
	if stuck == nil {
		t.Fatal("r-stuck is not waiting")
	}
	res := c.rec.check(context.Background(), stuck)
	if res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_IN_DOUBT || !strings.Contains(res.GetError().GetMessage(), "still runs") {
		t.Fatalf("a child outliving the wait: %v; want IN_DOUBT naming it", res)
	}
}

// Typing leaves nothing to check and is harmless to repeat: NOT_SENT at
// once. A send to several people, whose group cannot be named, is
// IN_DOUBT at once.
func TestReconcileTracelessKinds(t *testing.T) {
	c := newCrashed(t, time.Hour, time.Hour)
	c.running(&linev1.Command{Id: "r-typing", Line: testLine, Target: &linev1.Command_ChatGuid{ChatGuid: c.chat.GUID},
		Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}, nil)
	c.running(&linev1.Command{Id: "r-group", Line: testLine,
		Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{reconcilePeer, "+15557654000"}}},
		Kind:   &linev1.Command_SendText{SendText: &linev1.SendText{Text: "all of you"}}}, nil)
	c.restartWith(time.Hour, time.Hour)
	wantCode(t, c.first("r-typing"), linev1.ErrorCode_ERROR_CODE_NOT_SENT)
	wantCode(t, c.first("r-group"), linev1.ErrorCode_ERROR_CODE_IN_DOUBT)
}

// A row written but not sent is Messages' now: it is waited for through
// the settling time, then IN_DOUBT naming the row, never resent.
func TestReconcilePendingRowIsInDoubtAfterSettling(t *testing.T) {
	c := newCrashed(t, time.Hour, time.Hour)
	c.running(c.text("r-pending", "slow"), nil)
	row, err := c.store.Insert(context.Background(), sim.Msg{Chat: c.chat.GUID, FromMe: true, Text: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	c.restartWith(time.Second, time.Hour).rec.now = func() time.Time { return clock }
	if rec := c.first("r-pending"); rec.State != stateReconciling {
		t.Fatalf("a written, unsent row before the settling time: %s %v", rec.State, rec.Result)
	}
	clock = clock.Add(2 * time.Second)
	res := c.rec.check(context.Background(), c.rec.waiting[0])
	if res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_IN_DOUBT || !strings.Contains(res.GetError().GetMessage(), row.GUID) {
		t.Fatalf("after the settling time: %v; want IN_DOUBT naming %s", res, row.GUID)
	}
}

// The wall clock set back a day between a send's start and Messages' row,
// then a crash: the row lies above the start's chat.db mark but is dated a
// day before the start. The wall-clock window called it absent and the
// send NOT_SENT although it was sent (the chaos suite's false
// acknowledgement); with the mark it is IN_DOUBT, saying why. A finished
// command that claims that row, recorded after the jump (so its time looks
// older than the interrupted start), is still taken into account: the
// interrupted send is then certainly absent.
func TestReconcileAfterTheClockWasSetBack(t *testing.T) {
	ctx := context.Background()
	c := newCrashed(t, 0, 0)
	ahead := time.Now().Add(24 * time.Hour)
	c.j.now = func() time.Time { return ahead }
	cmd := c.text("r-clock", "on my way")
	c.running(cmd, nil)
	c.j.now = time.Now // the clock set back a day
	row, err := c.store.Insert(ctx, sim.Msg{Chat: c.chat.GUID, FromMe: true, Text: "on my way", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	msg := wantCode(t, c.restartWith(0, 0).first("r-clock"), linev1.ErrorCode_ERROR_CODE_IN_DOUBT)
	if !strings.Contains(msg, row.GUID) || !strings.Contains(msg, "clock was set back") {
		t.Fatalf("IN_DOUBT without the row or the reason: %s", msg)
	}

	c2 := newCrashed(t, 0, 0)
	c2.j.now = func() time.Time { return ahead }
	c2.running(c2.text("r-clock", "on my way"), nil)
	c2.j.now = time.Now
	other, err := c2.store.Insert(ctx, sim.Msg{Chat: c2.chat.GUID, FromMe: true, Text: "on my way", Sent: true})
	if err != nil {
		t.Fatal(err)
	}
	c2.done(c2.text("r-other", "on my way"), &linev1.Snapshot{MessageGuid: other.GUID, ChatGuid: c2.chat.GUID})
	msg = wantCode(t, c2.restartWith(time.Nanosecond, time.Minute).first("r-clock"), linev1.ErrorCode_ERROR_CODE_NOT_SENT)
	if !strings.Contains(msg, "no outgoing row") {
		t.Fatalf("NOT_SENT without what was seen: %s", msg)
	}
}
