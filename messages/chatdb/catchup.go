package chatdb

import (
	"context"
	"errors"
)

// CursorAt is a cursor positioned after message ROWID rowid: a tailer started
// from it reports every message with a higher ROWID. `line-agent inspect
// --since` uses it to replay history on demand.
func CursorAt(rowid int64) []byte {
	c := &cursor{MaxRowID: max(rowid, 0), states: map[int64]state{}}
	return c.marshal()
}

// CatchUp reads everything after start (nil: nothing, only positions at the
// end) into sink once and returns the cursor after it, without watching for
// more. Unlike Run it fails at once when chat.db cannot be opened: it serves
// one-shot tools, where a retry loop would only hide a wrong path or a
// missing Full Disk Access permission.
func (t *Tailer) CatchUp(ctx context.Context, start []byte, sink Sink) ([]byte, error) {
	if !t.running.CompareAndSwap(false, true) {
		return nil, errors.New("chatdb: tailer already running")
	}
	defer t.running.Store(false)
	t.cur = nil
	if start != nil {
		c, err := parseCursor(start)
		if err != nil {
			return nil, err
		}
		t.cur = c
	}
	if err := t.openOnce(); err != nil {
		return nil, err
	}
	defer t.r.Close()
	t.keys = newKeySet(t.opts.DedupeKeys)
	if t.cur == nil {
		if err := t.baseline(ctx, sink); err != nil {
			return nil, err
		}
	}
	if _, err := t.drain(ctx, sink, true); err != nil {
		return nil, err
	}
	return t.cur.marshal(), nil
}
