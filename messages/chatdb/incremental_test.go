package chatdb_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// The tests here drive the scanner's step directly (through ScanStepper),
// against chat.db files that messages/sim writes through its own connection,
// as Messages does: they check that the step's fast path (nothing read
// when PRAGMA data_version did not move) and the owed window of a burst
// never lose an in-place update.

func newStepper(t *testing.T, path string, o chatdb.StepperOptions) *chatdb.ScanStepper {
	t.Helper()
	s, err := chatdb.NewScanStepperWith(context.Background(), path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func step(t *testing.T, s *chatdb.ScanStepper) chatdb.StepInfo {
	t.Helper()
	info, err := s.StepDetail(context.Background(), false, true)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// hasKey reports whether keys holds want, or a key starting with it when
// want ends in "/" (an edit's version is its date).
func hasKey(keys []string, want string) bool {
	return slices.ContainsFunc(keys, func(k string) bool {
		return k == want || (strings.HasSuffix(want, "/") && strings.HasPrefix(k, want))
	})
}

// settle steps until a step is skipped (at most a few: the first steps
// read everything) and returns the keys seen on the way.
func settle(t *testing.T, s *chatdb.ScanStepper) []string {
	t.Helper()
	var keys []string
	for range 5 {
		info := step(t, s)
		if info.Skipped {
			return keys
		}
		keys = append(keys, info.Keys...)
	}
	t.Fatal("no step was skipped with nothing committed")
	return nil
}

// TestEveryInPlaceUpdateAfterASkippedStep commits each kind of update
// Messages makes in place, one at a time, each after a step that the fast
// path skipped: the next step must read it and report it, and the one after
// must be skipped again.
func TestEveryInPlaceUpdateAfterASkippedStep(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	out, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "on its way"})
	must(t, err)
	failing, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "no signal"})
	must(t, err)
	in, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "hello"})
	must(t, err)
	photo, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "look", Attachments: []sim.Attachment{
		{GUID: "ATT-COMING", Name: "cat.jpg", Data: []byte("the whole cat"), TransferState: 1},
	}})
	must(t, err)

	s := newStepper(t, e.path, chatdb.StepperOptions{Mode: chatdb.StepIsolated})
	if keys := settle(t, s); len(keys) != 0 {
		t.Fatalf("rows present at the baseline were reported: %v", keys)
	}

	var newRow sim.Row
	var all []string
	for _, u := range []struct {
		what  string
		apply func() error
		want  func() string
	}{
		{"send completed", func() error { return e.store.MarkSent(ctx, out.GUID) }, func() string { return key(out.GUID, "sent", "0") }},
		{"delivery", func() error { return e.store.MarkDelivered(ctx, out.GUID) }, func() string { return key(out.GUID, "delivered", "0") }},
		{"read receipt", func() error { return e.store.MarkRead(ctx, out.GUID) }, func() string { return key(out.GUID, "read", "0") }},
		{"edit", func() error { return e.store.Edit(ctx, out.GUID, 0, "on its way now") }, func() string { return out.GUID + "/edited/" }},
		{"unsend", func() error { return e.store.Unsend(ctx, out.GUID, 0) }, func() string { return key(out.GUID, "unsent", "0") }},
		{"send failure", func() error { return e.store.SetError(ctx, failing.GUID, 22) }, func() string { return key(failing.GUID, "failed", "22") }},
		{"read by me", func() error { _, err := e.store.MarkChatRead(ctx, e.chat.GUID); return err }, func() string { return key(in.GUID, "read", "0") }},
		{"file received", func() error { return e.store.FinishTransfer(ctx, "ATT-COMING", []byte("the whole cat")) }, func() string { return key(photo.GUID, "attachment", "ATT-COMING") }},
		{"new row", func() error {
			var err error
			newRow, err = e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "and one more"})
			return err
		}, func() string { return key(newRow.GUID, "message", "0") }},
	} {
		must(t, u.apply())
		info := step(t, s)
		if info.Skipped || !info.Committed || !hasKey(info.Keys, u.want()) {
			t.Errorf("%s: step after it skipped %v, committed %v, keys %v; want %s", u.what, info.Skipped, info.Committed, info.Keys, u.want())
		}
		all = append(all, info.Keys...)
		if info := step(t, s); !info.Skipped || len(info.Keys) != 0 {
			t.Errorf("%s: the step after that was not skipped (keys %v)", u.what, info.Keys)
		}
	}
	if dup := duplicates(all); len(dup) > 0 {
		t.Errorf("reported twice: %v", dup)
	}
}

func duplicates(keys []string) []string {
	seen := map[string]bool{}
	var dup []string
	for _, k := range keys {
		if seen[k] {
			dup = append(dup, k)
		}
		seen[k] = true
	}
	return dup
}

// TestUpdateCommittedDuringAStep commits a delivery while a step is under
// way, after its data_version read and before its window read: the step's
// snapshot must not hold it (the data_version it read belongs to the
// snapshot it reads), so the next step must not be skipped and reports it.
func TestUpdateCommittedDuringAStep(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	out, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Sent: true, Text: "hi"})
	must(t, err)
	var arm, fired bool
	s := newStepper(t, e.path, chatdb.StepperOptions{Mode: chatdb.StepIsolated, BeforeWindow: func() {
		if arm && !fired {
			fired = true
			must(t, e.store.MarkDelivered(ctx, out.GUID))
		}
	}})
	settle(t, s)

	next, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "the commit that starts the step"})
	must(t, err)
	arm = true
	during := step(t, s)
	if !fired {
		t.Fatal("the step read no window")
	}
	delivered := key(out.GUID, "delivered", "0")
	if !hasKey(during.Keys, key(next.GUID, "message", "0")) || hasKey(during.Keys, delivered) {
		t.Fatalf("the step under way reported %v: want the new row and not the delivery committed after its snapshot began", during.Keys)
	}
	after := step(t, s)
	if after.Skipped || !hasKey(after.Keys, delivered) {
		t.Fatalf("the step after it: skipped %v, keys %v; want %s", after.Skipped, after.Keys, delivered)
	}
	if info := step(t, s); !info.Skipped {
		t.Errorf("then nothing was committed, yet the step was not skipped (keys %v)", info.Keys)
	}
}

// fakeNow is an elapsed-time clock the test moves by hand.
type fakeNow struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (f *fakeNow) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// TestBurstReadsTheWindowOnce: commits within WindowInterval of the last
// read of the window have their new rows read at once and their in-place
// updates read together by one step at the due time, none lost.
func TestBurstReadsTheWindowOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	out, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "hi"})
	must(t, err)
	clock := &fakeNow{t: time.Unix(1000, 0)}
	reads := 0
	s := newStepper(t, e.path, chatdb.StepperOptions{Mode: chatdb.StepIsolated, WindowEvery: 25 * time.Millisecond, Now: clock.now,
		BeforeWindow: func() { reads++ }})
	settle(t, s)
	reads = 0
	start := clock.now()

	// The burst: a send completes, a reply arrives, the send is delivered.
	clock.add(time.Millisecond)
	must(t, e.store.MarkSent(ctx, out.GUID))
	reply, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "hello back"})
	must(t, err)
	first := step(t, s)
	if !hasKey(first.Keys, key(reply.GUID, "message", "0")) || hasKey(first.Keys, key(out.GUID, "sent", "0")) {
		t.Fatalf("first step of the burst: %v; want the new row at once and the update left for the window read", first.Keys)
	}
	if want := start.Add(25 * time.Millisecond); !first.WindowDue.Equal(want) {
		t.Fatalf("window due at %v, want %v", first.WindowDue, want)
	}
	clock.add(time.Millisecond)
	if info := step(t, s); !info.Skipped || !info.WindowDue.Equal(first.WindowDue) {
		t.Fatalf("nothing new, window not due: skipped %v, due %v", info.Skipped, info.WindowDue)
	}
	clock.add(time.Millisecond)
	must(t, e.store.MarkDelivered(ctx, out.GUID))
	if info := step(t, s); info.Skipped || len(info.Keys) != 0 || !info.Committed || !info.WindowDue.Equal(first.WindowDue) {
		t.Fatalf("a commit in the burst with no new row: %+v", info)
	}
	if reads != 0 {
		t.Fatalf("%d reads of the window inside the burst", reads)
	}

	clock.add(22 * time.Millisecond) // at the due time
	due := step(t, s)
	if due.Skipped || due.Committed || !hasKey(due.Keys, key(out.GUID, "sent", "0")) || !hasKey(due.Keys, key(out.GUID, "delivered", "0")) || !due.WindowDue.IsZero() {
		t.Fatalf("the step at the due time: %+v; want the burst's updates, from one window read", due)
	}
	if reads != 1 {
		t.Fatalf("%d reads of the window for the burst, want 1", reads)
	}
	if info := step(t, s); !info.Skipped || !info.WindowDue.IsZero() {
		t.Fatalf("after the burst: %+v", info)
	}

	// A commit long after the last read is read in full at once.
	clock.add(time.Second)
	must(t, e.store.MarkRead(ctx, out.GUID))
	if info := step(t, s); !hasKey(info.Keys, key(out.GUID, "read", "0")) || !info.WindowDue.IsZero() {
		t.Fatalf("an isolated commit: %+v", info)
	}
	if dup := duplicates(append(append(first.Keys, due.Keys...), key(out.GUID, "read", "0"))); len(dup) > 0 {
		t.Errorf("reported twice: %v", dup)
	}
}

// TestStepNotAdoptedReadsAgain: when the Sink's Commit fails the Tailer
// offers the same cursor again, and the step must read it again rather
// than take it for the cursor it left.
func TestStepNotAdoptedReadsAgain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	out, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "hi"})
	must(t, err)
	s := newStepper(t, e.path, chatdb.StepperOptions{Mode: chatdb.StepIsolated})
	settle(t, s)
	must(t, e.store.MarkSent(ctx, out.GUID))
	failed, err := s.StepDetail(ctx, false, false)
	must(t, err)
	again := step(t, s)
	if want := key(out.GUID, "sent", "0"); !hasKey(failed.Keys, want) || again.Skipped || !slices.Equal(again.Keys, failed.Keys) {
		t.Fatalf("step not adopted: %v; the one after: skipped %v, %v; want %s twice", failed.Keys, again.Skipped, again.Keys, want)
	}
	if info := step(t, s); !info.Skipped {
		t.Errorf("adopted, then nothing committed: not skipped (%v)", info.Keys)
	}
}

// TestStepThatLeftMoreIsNotSkipped: rows beyond a step's batch come in the
// steps after it, with no commit in between.
func TestStepThatLeftMoreIsNotSkipped(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := newStepper(t, e.path, chatdb.StepperOptions{Mode: chatdb.StepIsolated, BatchSize: 2})
	settle(t, s)
	msgs := make([]sim.Msg, 5)
	for i := range msgs {
		msgs[i] = sim.Msg{Chat: e.chat.GUID, Text: "batch"}
	}
	rows, err := e.store.InsertBatch(ctx, msgs)
	must(t, err)
	var keys []string
	for i, want := range []int{2, 2, 1} {
		info := step(t, s)
		if info.Skipped || info.Rows != want || info.More != (i < 2) {
			t.Fatalf("step %d: %+v; want %d rows", i, info, want)
		}
		keys = append(keys, info.Keys...)
	}
	for _, r := range rows {
		if !hasKey(keys, key(r.GUID, "message", "0")) {
			t.Errorf("row %d not reported", r.RowID)
		}
	}
	if info := step(t, s); !info.Skipped {
		t.Errorf("all read: not skipped (%+v)", info)
	}
}

// TestTailerReadsTheOwedWindowWithoutAnotherCommit: the Tailer itself runs
// the owed read of a burst at its due time. The backstop is an hour away
// and nothing is committed after the burst, so only that read can report
// the send completing.
func TestTailerReadsTheOwedWindowWithoutAnotherCommit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, func(o *chatdb.TailerOptions) {
		o.BackstopInterval = time.Hour
		o.WindowInterval = 300 * time.Millisecond
	})
	r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, FromMe: true, Text: "hi"})
	must(t, err)
	e.sink.waitKeys(t, wait, key(r.GUID, "message", "0"))
	must(t, e.store.MarkSent(ctx, r.GUID)) // most likely within 300 ms of the window read
	e.sink.waitKeys(t, 5*time.Second, key(r.GUID, "sent", "0"))
	if got := e.tail.Stats().BackstopCatches; got != 0 {
		t.Errorf("backstop counted %d missed changes", got)
	}
}
