package agent

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// results are the results emitted for id so far.
func (f *frames) results(id string) []*linev1.CommandResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resultsLocked(id)
}

// resultsLocked is results with f.mu held (inside waitFor's condition).
func (f *frames) resultsLocked(id string) []*linev1.CommandResult {
	var out []*linev1.CommandResult
	for _, fr := range f.all {
		if r := fr.GetResult(); r != nil && r.GetCommandId() == id {
			out = append(out, r)
		}
	}
	return out
}

// A command redelivered unchanged is answered from the journal's record;
// a command that reuses a recorded id with another deadline (submitted
// again after the relay forgot the first) is refused INVALID_ARGUMENT,
// not run and not answered with the first one's outcome; a record an
// older agent wrote, without a deadline, answers any command of its id, as
// it did.
func TestReusedIDIsNotAnsweredFromTheRecord(t *testing.T) {
	ctx := context.Background()
	j, d, drv, out := journalDispatcher(t)

	first := sendText("x-1")
	d.Submit(ctx, first)
	if res := out.result(t, "x-1", 5*time.Second); res.GetSnapshot() == nil {
		t.Fatalf("first run: %v", res)
	}
	// Durable before anything else: until then the result is answered
	// from memory (Dispatcher.finishing), for the milliseconds a write
	// takes. The memory is let go after the commit, so the record can
	// read done a moment before: wait for both.
	if !eventually(5*time.Second, func() bool {
		rec, err := j.Lookup(ctx, "x-1")
		d.mu.Lock()
		_, inMemory := d.finishing["x-1"]
		d.mu.Unlock()
		return err == nil && rec != nil && rec.State == stateDone && !inMemory
	}) {
		t.Fatal("x-1 never recorded done and let go from memory")
	}
	nth := func(n int) *linev1.CommandResult {
		t.Helper()
		out.waitFor(t, 5*time.Second, "result of x-1", func([]*linev1.AgentFrame) bool { return len(out.resultsLocked("x-1")) >= n })
		return out.results("x-1")[n-1]
	}

	// Redelivered unchanged: the same outcome, not run again.
	d.Submit(ctx, proto.Clone(first).(*linev1.Command))
	if got := nth(2); !proto.Equal(got, out.results("x-1")[0]) {
		t.Fatalf("redelivery answered %v, want the recorded result", got)
	}
	// The same id, another deadline: refused, not run.
	again := sendText("x-1")
	again.Deadline = timestamppb.New(first.GetDeadline().AsTime().Add(30 * 24 * time.Hour))
	d.Submit(ctx, again)
	if got := nth(3); got.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || got.GetSnapshot() != nil {
		t.Fatalf("a reused id answered %v, want INVALID_ARGUMENT", got)
	}
	if n := drv.count("x-1"); n != 1 {
		t.Fatalf("the driver ran x-1 %d times, want once", n)
	}

	// A record without a deadline (an older agent's) answers as before.
	if _, err := j.db.Exec(`UPDATE commands SET deadline = NULL WHERE id = 'x-1'`); err != nil {
		t.Fatal(err)
	}
	d.Submit(ctx, again)
	if got := nth(4); got.GetSnapshot() == nil {
		t.Fatalf("a record without a deadline answered %v, want its result", got)
	}
	var dl sql.NullInt64
	if err := j.db.QueryRow(`SELECT deadline FROM commands WHERE id = 'x-1'`).Scan(&dl); err != nil || dl.Valid {
		t.Fatalf("the record's deadline %v, %v: a refused command must not change it", dl, err)
	}
}
