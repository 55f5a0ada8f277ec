package relay

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/groupcommit"
)

// TestStoreWritesAfterCloseFail: the writes queued before close are
// committed; one after close fails with groupcommit.ErrClosed and writes
// nothing.
func TestStoreWritesAfterCloseFail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.addProjectToken(ctx, "before", nil, now); err != nil {
		t.Fatal(err)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}
	if err := st.addProjectToken(ctx, "after", nil, now); !errors.Is(err, groupcommit.ErrClosed) {
		t.Fatalf("write after close: %v; want groupcommit.ErrClosed", err)
	}
	if _, err := st.command(ctx, "any"); err == nil {
		t.Fatal("a prepared read after close succeeded")
	}
	st, err = openStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	for hash, want := range map[string]bool{"before": true, "after": false} {
		if found, _, err := st.projectToken(ctx, hash); err != nil || found != want {
			t.Fatalf("token %q found %v, %v; want %v", hash, found, err, want)
		}
	}
}

// TestFinishedRowIsTheStoredRow: the row a result's write hands to the
// waiting platform API calls (which answer from it without reading it
// back) is the row a read finds afterwards, field for field; a second
// result changes nothing and hands over none. On the way, a claim takes
// only the commands of the lines the agent holds, among several.
func TestFinishedRowIsTheStoredRow(t *testing.T) {
	ctx := context.Background()
	st, err := openStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	now := time.Unix(1_800_000_000, 123)
	const held, other = "+15550000001", "+15550000002"
	if _, err := st.createAgent(ctx, "agt_1", "secret", "host", "v", []string{held}, nil, "tok", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ id, line string }{{"mine", held}, {"not-mine", other}} {
		if created, _, err := st.insertCommand(ctx, &commandRow{
			id: c.id, line: c.line, kind: "send_text", command: []byte("cmd-" + c.id),
			deadline: now.Add(time.Minute), created: now, fingerprint: "fp-" + c.id,
		}, lineKey(c.line), nil); err != nil || !created {
			t.Fatalf("insert %s: created %v, %v", c.id, created, err)
		}
	}
	var claimed []*commandRow
	if err := st.tx(ctx, st.claimCommandsFn(ctx, "agt_1", []string{lineKey(held), lineKey(other)}, nil, false, 10, now, &claimed)); err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 1 || claimed[0].id != "mine" || claimed[0].state != stateDispatched {
		t.Fatalf("claimed %+v; want only the command of the held line, dispatched", claimed)
	}
	finish := func(at time.Time) *commandRow {
		t.Helper()
		var final *commandRow
		if err := st.tx(ctx, st.finishCommandFn(ctx, "mine", "agt_1", stateFailed, nil, "NOT_FOUND", "no such chat", []byte("err"), at, &final)); err != nil {
			t.Fatal(err)
		}
		return final
	}
	final := finish(now.Add(time.Second))
	stored, err := st.command(ctx, "mine")
	if err != nil || stored == nil {
		t.Fatalf("read back: %+v, %v", stored, err)
	}
	if final == nil || !reflect.DeepEqual(*final, *stored) {
		t.Fatalf("the row handed to waiters differs from the stored one:\n handed %+v\n stored %+v", final, stored)
	}
	if final.state != stateFailed || final.errCode != "NOT_FOUND" || !final.updated.Equal(now.Add(time.Second)) {
		t.Fatalf("final row %+v", final)
	}
	if again := finish(now.Add(2 * time.Second)); again != nil {
		t.Fatalf("a second result handed over %+v; final states never change", again)
	}
	if r, _ := st.command(ctx, "mine"); !reflect.DeepEqual(*r, *stored) {
		t.Fatalf("a second result changed the row: %+v", r)
	}
}
