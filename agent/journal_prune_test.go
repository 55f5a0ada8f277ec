package agent

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// pruneCounter is a journalObserver that counts pruned records.
type pruneCounter struct{ n atomic.Int64 }

func (p *pruneCounter) eventAcked(time.Duration) {}
func (p *pruneCounter) CommandSettled(string)    {}
func (p *pruneCounter) commandsPruned(n int)     { p.n.Add(int64(n)) }

// pruneJournal opens a journal on a settable clock that counts pruned
// records, keeping keep records before the newest or unfinished one.
func pruneJournal(t *testing.T, keep int64) (*Journal, *time.Time, *pruneCounter) {
	t.Helper()
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	clock := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	j.now = func() time.Time { return clock }
	obs := &pruneCounter{}
	j.obs = obs
	j.pruneKeep = keep
	return j, &clock, obs
}

// finishWithin records and finishes a command with a deadline that far
// after the clock.
func finishWithin(t *testing.T, j *Journal, id string, deadline time.Duration) {
	t.Helper()
	ctx := context.Background()
	cmd := testCommand(id)
	cmd.Deadline = timestamppb.New(j.now().Add(deadline))
	if rec, err := j.Begin(ctx, cmd); err != nil || rec != nil {
		t.Fatalf("Begin %s = %v, %v", id, rec, err)
	}
	if err := j.Start(id, -1); err != nil {
		t.Fatal(err)
	}
	res := &linev1.CommandResult{CommandId: id, Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{MessageGuid: "G-" + id}}}
	if err := j.Finish(ctx, res); err != nil {
		t.Fatal(err)
	}
	waitPruneTurn(t, j)
}

// waitPruneTurn waits (bounded) for a prune turn the last finish queued.
func waitPruneTurn(t *testing.T, j *Journal) {
	t.Helper()
	for range 500 {
		j.mu.Lock()
		busy := j.pruning
		j.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the prune turn did not end in 5s")
}

// known reports which ids the journal still has a record of.
func known(t *testing.T, j *Journal, ids ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, id := range ids {
		rec, err := j.Lookup(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = rec != nil
	}
	return out
}

// TestJournalPrunesFinishedRecordsPastRetention: a finished record goes
// once both its finish and its deadline are a retention old, and not
// before: the one whose deadline is still ahead stays (the relay may
// redeliver it), as do the young ones and the ones the keep window
// guards. Without pruning, state.db keeps every command for ever.
func TestJournalPrunesFinishedRecordsPastRetention(t *testing.T) {
	j, clock, obs := pruneJournal(t, 3)
	j.SetRetention(48 * time.Hour)
	ctx := context.Background()

	finishWithin(t, j, "old", time.Minute)
	refused := testCommand("old-refused")
	refused.Deadline = timestamppb.New(*clock)
	if err := j.Record(ctx, refused, &linev1.CommandResult{CommandId: "old-refused", Outcome: &linev1.CommandResult_Error{Error: &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT}}}); err != nil {
		t.Fatal(err)
	}
	waitPruneTurn(t, j)
	finishWithin(t, j, "old-long-deadline", 72*time.Hour)
	finishWithin(t, j, "old-2", time.Minute)
	if n := obs.n.Load(); n != 0 {
		t.Fatalf("%d records pruned before any was a retention old", n)
	}

	*clock = clock.Add(49 * time.Hour)
	finishWithin(t, j, "new-1", time.Minute) // the first prune turn, keep 3: old-2 is guarded
	if got := known(t, j, "old", "old-refused", "old-long-deadline", "old-2", "new-1"); got["old"] || got["old-refused"] || !got["old-long-deadline"] || !got["old-2"] || !got["new-1"] {
		t.Fatalf("after the first turn the journal knows %v; want old and old-refused pruned, the rest kept", got)
	}
	if n := obs.n.Load(); n != 2 {
		t.Fatalf("pruned counted %d, want 2", n)
	}

	// The next turn is an hour later; by then two newer records push
	// old-2 out of the keep window. old-long-deadline's deadline is still
	// less than a retention ago.
	*clock = clock.Add(pruneEvery)
	finishWithin(t, j, "new-2", time.Minute)
	finishWithin(t, j, "new-3", time.Minute)
	*clock = clock.Add(pruneEvery)
	finishWithin(t, j, "new-4", time.Minute)
	if got := known(t, j, "old-long-deadline", "old-2", "new-1", "new-2", "new-3", "new-4"); got["old-2"] || !got["old-long-deadline"] || !got["new-1"] || !got["new-4"] {
		t.Fatalf("after the later turns the journal knows %v; want old-2 pruned, the rest kept", got)
	}

	// Past its deadline by a retention, the long-deadline record goes too.
	*clock = clock.Add(72 * time.Hour)
	finishWithin(t, j, "new-5", time.Minute)
	if got := known(t, j, "old-long-deadline"); got["old-long-deadline"] {
		t.Fatal("old-long-deadline was kept a retention past its deadline")
	}
}

// TestJournalPruneSparesUnfinishedCommands: an old command still running
// (a crash left it for reconciliation) is never pruned, nor are the keep
// records before it, which reconciliation reads to tell its messages
// from theirs.
func TestJournalPruneSparesUnfinishedCommands(t *testing.T) {
	j, clock, _ := pruneJournal(t, 1)
	j.SetRetention(time.Hour)
	ctx := context.Background()
	finishWithin(t, j, "a", time.Minute)
	finishWithin(t, j, "b", time.Minute)
	if _, err := j.Begin(ctx, testCommand("running")); err != nil {
		t.Fatal(err)
	}
	if err := j.Start("running", -1); err != nil {
		t.Fatal(err)
	}
	*clock = clock.Add(3 * time.Hour)
	finishWithin(t, j, "c", time.Minute)
	*clock = clock.Add(3 * time.Hour)
	finishWithin(t, j, "d", time.Minute)
	if got := known(t, j, "a", "b", "running", "c", "d"); got["a"] || !got["b"] || !got["running"] || !got["c"] || !got["d"] {
		t.Fatalf("the journal knows %v; want only a pruned (b is in the keep window before running)", got)
	}
}

// TestJournalPruneWorksThroughABacklogInBatches: a journal with more old
// records than one turn looks at is pruned over successive finishes, a
// batch each, and no turn waits the hour while rows are left.
func TestJournalPruneWorksThroughABacklogInBatches(t *testing.T) {
	j, clock, obs := pruneJournal(t, 0)
	j.SetRetention(time.Hour)
	ctx := context.Background()
	n := pruneBatch + pruneBatch/2
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = testCommand(fmt.Sprintf("c%05d", i))
	}
	if _, err := j.BeginMany(ctx, cmds, false, -1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, n)
	for _, c := range cmds {
		j.FinishAsync(&linev1.CommandResult{CommandId: c.GetId()}, func(err error) { done <- err })
		waitPruneTurn(t, j)
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := obs.n.Load(); got != 0 {
		t.Fatalf("%d pruned while young", got)
	}
	*clock = clock.Add(2 * time.Hour)
	finishWithin(t, j, "t1", time.Minute)
	if got := obs.n.Load(); got != pruneBatch {
		t.Fatalf("the first turn pruned %d, want one batch (%d)", got, pruneBatch)
	}
	finishWithin(t, j, "t2", time.Minute) // the same hour: rows are left
	if got := obs.n.Load(); got != int64(n) {
		t.Fatalf("after the second turn %d pruned, want all %d", got, n)
	}
	if got := known(t, j, "t1", "t2"); !got["t1"] || !got["t2"] {
		t.Fatalf("young records pruned: %v", got)
	}
}

// TestJournalRetentionBelowAnHourIsRefused: a careless setting that could
// drop a record while its command may still come again stops the agent
// at start, saying which setting.
func TestJournalRetentionBelowAnHourIsRefused(t *testing.T) {
	_, err := New(Options{Config: Config{DataDir: t.TempDir(), JournalRetention: time.Minute}})
	if err == nil || !strings.Contains(err.Error(), "LINE_AGENT_JOURNAL_RETENTION") || !strings.Contains(err.Error(), "1h") {
		t.Fatalf("New with a 1m retention = %v; want a refusal naming the setting", err)
	}
}
