package chatdb_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// TestWindowReadsWhatTheRowByRowReadDid compares the two-pass read with the
// row-per-row read it replaced, on every kind of row the window tracks, for
// a window that is full and one that is not, through the ROWID range and
// through the date index.
func TestWindowReadsWhatTheRowByRowReadDid(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithSeed(3), sim.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15551230001"}})
	must(t, err)
	g, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15551230002", "+15551230003"}, DisplayName: "G"})
	must(t, err)

	at := func(ago time.Duration) time.Time { return now.Add(-ago) }
	ins := func(m sim.Msg) sim.Row {
		t.Helper()
		r, err := st.Insert(ctx, m)
		must(t, err)
		return r
	}
	old := ins(sim.Msg{Chat: c.GUID, Text: "three days ago", Date: at(72 * time.Hour)}) // outside the window
	out := ins(sim.Msg{Chat: c.GUID, FromMe: true, Text: "sent", Date: at(40 * time.Minute)})
	must(t, st.MarkSent(ctx, out.GUID))
	must(t, st.MarkDelivered(ctx, out.GUID))
	must(t, st.MarkRead(ctx, out.GUID))
	ed := ins(sim.Msg{Chat: c.GUID, FromMe: true, Sent: true, Text: "typo", Date: at(30 * time.Minute)})
	must(t, st.Edit(ctx, ed.GUID, 0, "fixed"))
	un := ins(sim.Msg{Chat: c.GUID, FromMe: true, Sent: true, Text: "oops", Date: at(29 * time.Minute)})
	must(t, st.Unsend(ctx, un.GUID, 0))
	fail := ins(sim.Msg{Chat: c.GUID, FromMe: true, Text: "no signal", Date: at(28 * time.Minute)})
	must(t, st.SetError(ctx, fail.GUID, 22))
	in := ins(sim.Msg{Chat: c.GUID, Text: "hi", Date: at(27 * time.Minute)})
	_, err = st.MarkChatRead(ctx, c.GUID)
	must(t, err)
	ins(sim.Msg{Chat: c.GUID, Tapback: &sim.Tapback{Target: out.GUID, Code: 2000}, Date: at(26 * time.Minute)})
	_, err = st.RenameGroup(ctx, g.GUID, "+15551230002", "Night owls")
	must(t, err)
	ins(sim.Msg{Chat: c.GUID, Text: "photo", Date: at(25 * time.Minute), Attachments: []sim.Attachment{
		{Name: "a.jpg", Data: []byte("whole")}, {Name: "b.jpg", Data: []byte("half of it"), TransferState: 1},
	}})
	// Rows sharing a date, so a full window has ties at its boundary.
	same := at(20 * time.Minute)
	for i := range 6 {
		ins(sim.Msg{Chat: c.GUID, Text: fmt.Sprint("same date ", i), Date: same})
	}
	ins(sim.Msg{Chat: g.GUID, FromMe: true, Sent: true, Delivered: true, Text: "to the group", Date: at(10 * time.Minute)})
	_ = old
	_ = in

	check := func(name string, windowRows int, wantRange, wantFull bool) {
		t.Helper()
		w, err := chatdb.ReadWindowBothWays(ctx, path, now, windowRows)
		must(t, err)
		if w.ByRange != wantRange || w.Full != wantFull {
			t.Fatalf("%s: read by range %v, full %v; want %v, %v", name, w.ByRange, w.Full, wantRange, wantFull)
		}
		if wantFull && w.Boundary != chatdb.ToAppleTime(same) {
			t.Fatalf("%s: the window ends at %d, not among the rows sharing a date (%d)", name, w.Boundary, chatdb.ToAppleTime(same))
		}
		if len(w.New) == 0 || !slices.Equal(w.New, w.Legacy) {
			t.Errorf("%s: window read\n%+v\nrow by row\n%+v", name, w.New, w.Legacy)
		}
		var withState, pending int
		for _, r := range w.New {
			if r.HasState() {
				withState++
			}
			if r.Pending() > 0 {
				pending++
			}
		}
		if !wantFull && (withState < 6 || pending != 1) {
			t.Errorf("%s: %d rows with a state, %d with a pending file: the test rows did not land in the window", name, withState, pending)
		}
	}
	check("not full, by range", 4000, true, false)
	// Newer than the six rows sharing a date: the rename (dated now) and
	// the group message; 5 rows end the window at the third of them.
	check("full with ties at the boundary, by range", 5, true, true)

	// iCloud history: many rows with new ROWIDs and old dates after the
	// window's first row, so its ROWID range is mostly other rows.
	hist := make([]sim.Msg, 800)
	for i := range hist {
		hist[i] = sim.Msg{Chat: c.GUID, Text: "from iCloud"}
	}
	_, err = st.InsertHistorical(ctx, 400*24*time.Hour, hist)
	must(t, err)
	ins(sim.Msg{Chat: c.GUID, FromMe: true, Text: "after the sync", Date: at(time.Minute)})
	check("not full, by date", 4000, false, false)
	check("full with ties at the boundary, by date", 6, false, true) // one more: "after the sync"
}
