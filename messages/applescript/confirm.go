package applescript

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// maxClaimedSkips bounds how many already-claimed rows find steps over: one
// per identical text sent to the same chat within dateSkew, so a handful.
const maxClaimedSkips = 16

// find looks for this send's row once: in the chat (any service spelling),
// in the send's window (above chat.db's newest row before the send, or,
// without that mark, not older than the send minus dateSkew), not claimed
// by an earlier send. A claimed row moves the search to just after it,
// whichever row (earliest or newest) the reader returns first.
func (s *Sender) find(ctx context.Context, t target, p payload, w chatdb.Window) (*chatdb.MessageState, error) {
	for range maxClaimedSkips {
		st, err := s.opts.ChatDB.FindOutgoing(ctx, t.rowChat(), p.rowText(), w)
		if errors.Is(err, chatdb.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if !s.claimed.has(st.GUID) {
			return &st, nil
		}
		switch {
		case w.Marked && st.RowID <= w.After, !w.Marked && st.Date.Before(w.Since):
			return nil, nil // a reader that ignores the window: nothing to step over
		case w.Marked:
			w.After = st.RowID
		default:
			w.Since = st.Date.Add(time.Nanosecond)
		}
	}
	return nil, nil
}

// window is where a send about to start will find its row: above chat.db's
// newest row now, so that a clock set back during the send cannot hide the
// row; from the start time (less dateSkew) when chat.db cannot say.
func (s *Sender) window(ctx context.Context, started time.Time) chatdb.Window {
	w := chatdb.Window{Since: started.Add(-dateSkew)}
	mark, err := s.opts.ChatDB.NewestRowID(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "reading chat.db's newest row before a send; finding its row by date instead", "err", err)
		return w
	}
	w.After, w.Marked = mark, true
	return w
}

// findOnce is find for a single look, errors logged and treated as "none".
func (s *Sender) findOnce(ctx context.Context, t target, p payload, w chatdb.Window) *chatdb.MessageState {
	r, err := s.find(ctx, t, p, w)
	if err != nil {
		s.log.WarnContext(ctx, "reading chat.db", "err", err)
		return nil
	}
	return r
}

// confirm polls chat.db with backoff until the row is sent, failed, or the
// command's deadline passes. Only a row with is_sent = 1 is success.
func (s *Sender) confirm(ctx context.Context, t target, p payload, w chatdb.Window) (*linev1.Snapshot, error) {
	var row *chatdb.MessageState
	state := "osascript returned; no outgoing row in chat.db yet"
	wait := pollFirst
	var lastReadErr error
	for {
		var err error
		if row == nil {
			row, err = s.find(ctx, t, p, w)
			if err == nil && row != nil && !s.claimed.claim(row.GUID) {
				row = nil // taken by a concurrent send in the meantime
			}
		} else {
			var r chatdb.MessageState
			r, err = s.opts.ChatDB.LookupMessage(ctx, row.GUID)
			if err == nil {
				row = &r
			}
		}
		if err != nil && ctx.Err() == nil {
			lastReadErr = err
			s.log.WarnContext(ctx, "reading chat.db while confirming a send", "err", err)
		}
		if row != nil {
			state = describe(row)
			switch {
			case row.Error > 0:
				return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
					Msg:       fmt.Sprintf("Messages failed to send message %s (chat.db error %d)", row.GUID, row.Error),
					LastState: state}
			case row.Sent:
				return snapshot(row), nil
			}
		}
		select {
		case <-ctx.Done():
			e := &command.Error{Code: linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED,
				Msg: "the command's deadline passed before Messages finished the send", LastState: state}
			if errors.Is(ctx.Err(), context.Canceled) {
				// Messages accepted the send; only chat.db can tell later.
				e.Code = linev1.ErrorCode_ERROR_CODE_IN_DOUBT
				e.Msg = "the command was cancelled after Messages accepted the send, before its row was sent"
			}
			if row == nil && lastReadErr != nil {
				e.Msg += fmt.Sprintf(" (reading chat.db: %v)", lastReadErr)
			}
			return nil, e
		case <-s.opts.Clock.After(wait):
		}
		wait = min(wait*2, pollMax)
	}
}

// describe is a row's state in words, for LastState and logs.
func describe(r *chatdb.MessageState) string {
	return fmt.Sprintf("row %s in %s: is_sent=%t is_delivered=%t error=%d", r.GUID, r.ChatGUID, r.Sent, r.Delivered, r.Error)
}
