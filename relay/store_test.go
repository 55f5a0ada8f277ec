package relay

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/groupcommit"
)

// TestStoreWritesAfterCloseFail: the writes queued before close are
// committed; one after close fails with groupcommit.ErrClosed and writes
// nothing. On each backend.
func TestStoreWritesAfterCloseFail(t *testing.T) { eachStore(t, testStoreWritesAfterCloseFail) }

func testStoreWritesAfterCloseFail(t *testing.T, open func() *store) {
	ctx := context.Background()
	st := open()
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
	st = open()
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
// only the commands of the lines the agent holds, among several. On each
// backend.
func TestFinishedRowIsTheStoredRow(t *testing.T) { eachStore(t, testFinishedRowIsTheStoredRow) }

func testFinishedRowIsTheStoredRow(t *testing.T, open func() *store) {
	ctx := context.Background()
	st := open()
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

// TestStoreOrdersAsSQLiteDoes: what the relay's queries order by reads the
// same on both backends: commands created in the same nanosecond are
// claimed in the order they were stored (SQLite's rowid; PostgreSQL's
// rowid column), and ids compare bytewise (upper case before lower case,
// as SQLite compares; PostgreSQL's columns are COLLATE "C").
func TestStoreOrdersAsSQLiteDoes(t *testing.T) { eachStore(t, testStoreOrdersAsSQLiteDoes) }

func testStoreOrdersAsSQLiteDoes(t *testing.T, open func() *store) {
	ctx := context.Background()
	st := open()
	now := time.Unix(1_800_000_000, 0)
	const line = "+15550000001"
	if _, err := st.createAgent(ctx, "agt_1", "s", "h", "v", []string{line}, nil, "tok", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	stored := []string{"m", "B", "z", "a", "Z"}
	for _, id := range stored {
		if created, _, err := st.insertCommand(ctx, &commandRow{
			id: id, line: line, kind: "send_text", command: []byte(id), deadline: now.Add(time.Minute), created: now,
		}, lineKey(line), nil); err != nil || !created {
			t.Fatalf("insert %s: %v, %v", id, created, err)
		}
	}
	var claimed []*commandRow
	if err := st.tx(ctx, st.claimCommandsFn(ctx, "agt_1", []string{lineKey(line)}, nil, false, 10, now, &claimed)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range claimed {
		ids = append(ids, r.id)
	}
	if !reflect.DeepEqual(ids, stored) {
		t.Fatalf("claimed %v; want the order stored, %v", ids, stored)
	}
	for _, id := range []string{"apt_b", "apt_B", "apt_a"} {
		if _, err := st.exec(ctx, `INSERT INTO api_tokens(id, hash, lines, pool, created_at) VALUES(?, ?, '[]', ?, ?)`, id, "h"+id, false, now.UnixNano()); err != nil {
			t.Fatal(err)
		}
	}
	toks, err := st.listAPITokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids = ids[:0]
	for _, tk := range toks {
		ids = append(ids, tk.ID)
	}
	if want := []string{"apt_B", "apt_a", "apt_b"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("tokens listed %v; want bytewise %v", ids, want)
	}
}

// TestStoreEventHeadNeverGoesBack: the head of the event log (where a live
// platform API subscription starts) stays at the last event stored when
// pruning deletes every event, and the next event is above it. On each
// backend.
func TestStoreEventHeadNeverGoesBack(t *testing.T) { eachStore(t, testStoreEventHeadNeverGoesBack) }

func testStoreEventHeadNeverGoesBack(t *testing.T, open func() *store) {
	ctx := context.Background()
	st := open()
	now := time.Unix(1_800_000_000, 0)
	const line = "+15550000001"
	if _, err := st.createAgent(ctx, "agt_1", "s", "h", "v", []string{line}, nil, "tok", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	if head, err := st.eventHead(ctx); err != nil || head != 0 {
		t.Fatalf("head of an empty log %d, %v; want 0", head, err)
	}
	store := func(at time.Time, seqs ...uint64) {
		t.Helper()
		var in []eventIn
		for _, s := range seqs {
			in = append(in, eventIn{seq: s, key: fmt.Sprint("k", s), lineKey: lineKey(line), bytes: []byte("ev")})
		}
		var stored uint64
		var added int
		var foreign []string
		if err := st.tx(ctx, st.storeEventsFn(ctx, "agt_1", in, at, &stored, &added, &foreign)); err != nil || added != len(seqs) {
			t.Fatalf("store events %v: added %d, %v", seqs, added, err)
		}
	}
	store(now, 1, 2, 3)
	head, err := st.eventHead(ctx)
	if err != nil || head < 3 {
		t.Fatalf("head after 3 events %d, %v", head, err)
	}
	if n, err := st.pruneEvents(ctx, now.Add(time.Second), 100); err != nil || n != 3 {
		t.Fatalf("pruned %d, %v; want all 3", n, err)
	}
	if after, err := st.eventHead(ctx); err != nil || after != head {
		t.Fatalf("head after pruning everything %d, %v; want %d", after, err, head)
	}
	store(now.Add(time.Minute), 4)
	rows, err := st.lineEventsAfter(ctx, []string{lineKey(line)}, head, 0, 10)
	if err != nil || len(rows) != 1 || rows[0].relaySeq <= head {
		t.Fatalf("events after the head %+v, %v; want the new one above %d", rows, err, head)
	}
	if through, err := st.prunedThrough(ctx, []string{lineKey(line)}); err != nil || through != head {
		t.Fatalf("pruned through %d, %v; want %d", through, err, head)
	}
}
