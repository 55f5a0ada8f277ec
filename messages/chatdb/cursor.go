package chatdb

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// cursorVersion is bumped when the cursor's meaning changes; an older
// cursor is then rejected rather than misread.
const cursorVersion = 1

// cursor is the tailer's position in chat.db. It is serialised as JSON and
// stored by the agent in the same transaction as the events it covers, so
// a restart resumes exactly after the last committed batch.
//
// What it holds, and why:
//   - MaxRowID: every row up to it was turned into events (inserts).
//   - Window: the last known state of recent rows whose state is not the
//     zero state (rows absent from it are at the zero state), so in-place
//     updates (sent, delivered, read, edited, unsent, failed) can be told
//     from what was already reported.
//   - DB and Seq: the database file's identity and its AUTOINCREMENT
//     sequence, to notice a database replaced wholesale (new identity, or a
//     sequence that went backwards).
//   - LastDate: the newest message date seen, which separates iCloud
//     history (older) from news and bounds what is replayed after a
//     replacement.
//   - SkipUntil and SkipDate: after a replacement, rows up to SkipUntil
//     dated at or before SkipDate are old content under new ROWIDs and are
//     skipped.
type cursor struct {
	V         int       `json:"v"`
	DB        string    `json:"db,omitempty"`
	Seq       int64     `json:"seq"`
	MaxRowID  int64     `json:"rowid"`
	LastDate  int64     `json:"last_date,omitempty"`
	SkipUntil int64     `json:"skip_until,omitempty"`
	SkipDate  int64     `json:"skip_date,omitempty"`
	Window    [][]int64 `json:"window,omitempty"` // [rowid, flags, error, edited, retracted, sumlen, unsent, pending]

	states map[int64]state
}

func parseCursor(b []byte) (*cursor, error) {
	var c cursor
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("chatdb: bad cursor: %w", err)
	}
	if c.V != cursorVersion {
		return nil, fmt.Errorf("chatdb: cursor version %d, want %d", c.V, cursorVersion)
	}
	c.states = make(map[int64]state, len(c.Window))
	for _, w := range c.Window {
		// Seven entries: a cursor from before pending transfers were
		// tracked; its rows count as having none.
		if len(w) != 7 && len(w) != 8 {
			return nil, fmt.Errorf("chatdb: bad cursor window entry %v", w)
		}
		s := state{Flags: w[1], Error: w[2], Edited: w[3], Retracted: w[4], SumLen: w[5], Unsent: w[6]}
		if len(w) == 8 {
			s.Pending = w[7]
		}
		c.states[w[0]] = s
	}
	c.Window = nil
	return &c, nil
}

func (c *cursor) marshal() []byte {
	out := *c
	out.V = cursorVersion
	out.Window = make([][]int64, 0, len(c.states))
	for _, id := range slices.Sorted(maps.Keys(c.states)) {
		s := c.states[id]
		out.Window = append(out.Window, []int64{id, s.Flags, s.Error, s.Edited, s.Retracted, s.SumLen, s.Unsent, s.Pending})
	}
	b, err := json.Marshal(&out)
	if err != nil {
		panic(err) // only ints and strings: cannot fail
	}
	return b
}

func (c *cursor) clone() *cursor {
	n := *c
	n.states = maps.Clone(c.states)
	if n.states == nil {
		n.states = map[int64]state{}
	}
	return &n
}

// setState records s for rowid; the zero state is implied by absence.
func (c *cursor) setState(rowid int64, s state) {
	if s == (state{}) {
		delete(c.states, rowid)
		return
	}
	c.states[rowid] = s
}

// CursorInfo is the human-readable summary of a cursor, for `line-agent
// status` and support.
type CursorInfo struct {
	MaxRowID   int64
	Database   string
	WindowRows int
}

// DescribeCursor summarises a stored cursor without exposing its format.
func DescribeCursor(b []byte) (CursorInfo, error) {
	c, err := parseCursor(b)
	if err != nil {
		return CursorInfo{}, err
	}
	return CursorInfo{MaxRowID: c.MaxRowID, Database: c.DB, WindowRows: len(c.states)}, nil
}
