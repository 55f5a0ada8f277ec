package agent

import (
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// maxCursorMark is the relay's bound on a CursorMark's cursor
// (docs/protocol.md); a larger one is not sent rather than refused.
const maxCursorMark = 1 << 20

// marker is the pump's part in cursor marks (cursormark.go): it passes the
// relay each new ready mark, the first of a stream at once and the later
// ones at most every interval, since a cursor holds the update window and
// can weigh a hundred kilobytes. A mark the relay misses is harmless: the
// next one supersedes it, and an older mark only means a longer re-read.
type marker struct {
	j        *Journal
	interval time.Duration
	sent     uint64    // gen of the last mark sent on this stream
	last     time.Time // when it was sent
	timer    *time.Timer
}

func newMarker(j *Journal, interval time.Duration) *marker {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	return &marker{j: j, interval: interval}
}

// poll returns the frame to send now, if any, and otherwise a channel that
// fires when a waiting mark may go (nil when none waits).
func (m *marker) poll() (*linev1.AgentFrame, <-chan time.Time) {
	mk, ok := m.j.marks.Ready()
	if !ok || mk.gen == m.sent || len(mk.cursor) > maxCursorMark {
		return nil, nil
	}
	if !m.last.IsZero() {
		if wait := m.interval - time.Since(m.last); wait > 0 {
			if m.timer == nil {
				m.timer = time.NewTimer(wait)
			} else {
				m.timer.Reset(wait)
			}
			return nil, m.timer.C
		}
	}
	m.sent, m.last = mk.gen, time.Now()
	return &linev1.AgentFrame{Frame: &linev1.AgentFrame_CursorMark{CursorMark: &linev1.CursorMark{
		Sequence: mk.seq, ChatdbCursor: mk.cursor,
	}}}, nil
}

func (m *marker) stop() {
	if m.timer != nil {
		m.timer.Stop()
	}
}
