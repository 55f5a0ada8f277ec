package relay

import (
	"context"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// maxCursorMark bounds the chat.db cursor a CursorMark may carry
// (docs/protocol.md); a larger one is ignored, not stored.
const maxCursorMark = 1 << 20

// saveCursorMark keeps an agent's chat.db cursor when every event it covers
// (up to seq, of the agent's current journal) is stored here; it reports
// whether it was kept. A mark for events the relay has not stored would
// let a lost journal skip them, so it is refused. Marks are not ordered
// against each other: the agent sends them in order on one stream, and an
// older one is only a longer re-read.
func (st *store) saveCursorMark(ctx context.Context, agentID string, seq uint64, cursor []byte) (bool, error) {
	n, err := st.exec(ctx, `UPDATE agents SET chatdb_cursor = ? WHERE id = ? AND event_seq >= ?`, cursor, agentID, int64(seq))
	return n == 1, err
}

// takeCursorMark stores a CursorMark from the stream. Events before it on
// the stream were flushed first (handle), so the sequences it covers are
// already counted.
func (ss *session) takeCursorMark(m *linev1.CursorMark) {
	c := m.GetChatdbCursor()
	switch {
	case len(c) == 0:
		ss.log.Warn("ignoring a cursor mark without a cursor", "sequence", m.GetSequence())
		return
	case len(c) > maxCursorMark:
		ss.log.Warn("ignoring a cursor mark over the size bound", "bytes", len(c), "bound", maxCursorMark)
		return
	}
	kept, err := ss.s.store.saveCursorMark(context.Background(), ss.agentID, m.GetSequence(), c)
	switch {
	case err != nil:
		ss.log.Warn("store cursor mark", "err", err)
	case !kept:
		ss.log.Warn("ignoring a cursor mark ahead of the events stored", "sequence", m.GetSequence())
	default:
		ss.log.Debug("cursor mark stored", "sequence", m.GetSequence(), "bytes", len(c))
	}
}
