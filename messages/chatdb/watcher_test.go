package chatdb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// TestWatcherAloneDeliversEveryCommit turns the backstop down to once a
// minute, so every one of many small commits must be found through file
// events and the 1, 2, 4... ms re-look (a WAL write can be seen before its
// commit is visible). It also reports the latency from commit to Commit.
func TestWatcherAloneDeliversEveryCommit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, func(o *chatdb.TailerOptions) { o.BackstopInterval = time.Minute })
	const n = 150
	var lat []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: fmt.Sprint("ping ", i)})
		must(t, err)
		e.sink.waitKeys(t, 2*time.Second, key(r.GUID, "message", "0"))
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("insert to committed event: p50 %v, p99 %v, max %v", lat[n/2], lat[n*99/100], lat[n-1])
	if lat[n/2] > 500*time.Millisecond {
		t.Errorf("p50 latency %v: the watcher is not driving the scans", lat[n/2])
	}
	if got := e.tail.Stats().BackstopCatches; got != 0 {
		t.Errorf("backstop caught %d", got)
	}
}

// TestCursorStaysBounded: the cursor holds at most WindowRows row states,
// however many rows went by.
func TestCursorStaysBounded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, func(o *chatdb.TailerOptions) { o.WindowRows = 50 })
	msgs := make([]sim.Msg, 400)
	for i := range msgs {
		msgs[i] = sim.Msg{Chat: e.chat.GUID, FromMe: true, Sent: true, Delivered: true, Text: "x"}
	}
	_, err := e.store.InsertBatch(ctx, msgs)
	must(t, err)
	e.sink.waitCount(t, wait, 3*len(msgs))
	// One more change so a step runs with the whole burst in the window.
	r, _ := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "tick"})
	e.sink.waitKeys(t, wait, key(r.GUID, "message", "0"))
	_, cur := e.sink.snapshot()
	info, err := chatdb.DescribeCursor(cur)
	must(t, err)
	if info.WindowRows > 50 || info.MaxRowID != r.RowID {
		t.Errorf("cursor %+v", info)
	}
	var raw map[string]any
	must(t, json.Unmarshal(cur, &raw))
	if len(cur) > 10_000 {
		t.Errorf("cursor is %d bytes", len(cur))
	}
}
