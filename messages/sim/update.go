package sim

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/pkg/editinfo"
	"github.com/line-agent/line-agent/pkg/typedstream"
)

// The in-place updaters below each commit their own transaction, as Messages
// updates a row it wrote earlier. This is the pattern a ROWID-only reader
// misses, which is why the sim reproduces it.

// update runs one UPDATE of the message with guid and fails with
// ErrNoMessage when no row matched.
func (s *Store) update(ctx context.Context, guid, set string, args ...any) error {
	return s.tx(ctx, func(tx *wtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE message SET `+set+` WHERE guid = ?`, append(args, guid)...)
		if err != nil {
			return fmt.Errorf("sim: update %s: %w", guid, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", ErrNoMessage, guid)
		}
		return nil
	})
}

// MarkSent records that Messages handed the outgoing row to Apple's servers
// (is_sent, is_finished).
func (s *Store) MarkSent(ctx context.Context, guid string) error {
	return s.update(ctx, guid, `is_sent = 1, is_finished = 1, error = 0`)
}

// FinishPending sends what an earlier run left half-sent: every outgoing
// message row not yet sent and not failed becomes sent and delivered, as
// Messages, relaunched, drains its queue. The simulated Messages lives in
// the agent's process, so a kill of the agent stops a send midway, which a
// real Messages (its own process) would have finished. It returns how many
// rows it finished.
func (s *Store) FinishPending(ctx context.Context) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *wtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE message SET is_sent = 1, is_finished = 1, is_delivered = 1, date_delivered = ?
			WHERE is_from_me = 1 AND is_sent = 0 AND error = 0 AND item_type = 0`, apple(s.opts.clock()))
		if err != nil {
			return fmt.Errorf("sim: finish pending sends: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return int(n), err
}

// MarkDelivered records the recipient's delivery receipt (is_delivered,
// date_delivered).
func (s *Store) MarkDelivered(ctx context.Context, guid string) error {
	return s.update(ctx, guid, `is_delivered = 1, date_delivered = ?`, apple(s.opts.clock()))
}

// MarkRead records a read: for an outgoing row the recipient's read receipt,
// for an incoming row that this account read it (is_read, date_read).
func (s *Store) MarkRead(ctx context.Context, guid string) error {
	return s.update(ctx, guid, `is_read = 1, date_read = ?`, apple(s.opts.clock()))
}

// MarkChatRead marks every unread incoming message of a chat read, as
// opening the conversation in Messages does, and returns how many rows
// changed. Like Messages it leaves alone the rows that are not plain
// messages: tapbacks and their removals, stickers placed on a bubble
// (associated_message_type != 0) and group events (item_type != 0) keep
// is_read 0, which is why chatdb's UnreadIncoming does not count them.
func (s *Store) MarkChatRead(ctx context.Context, chatGUID string) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *wtx) error {
		c, err := loadChat(ctx, tx, chatGUID)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE message SET is_read = 1, date_read = ? WHERE is_from_me = 0 AND is_read = 0
			AND item_type = 0 AND associated_message_type = 0
			AND ROWID IN (SELECT message_id FROM chat_message_join WHERE chat_id = ?)`, apple(s.opts.clock()), c.RowID)
		if err != nil {
			return fmt.Errorf("sim: mark chat read: %w", err)
		}
		n, _ = res.RowsAffected()
		_, err = tx.ExecContext(ctx, `UPDATE chat SET last_read_message_timestamp = ? WHERE ROWID = ?`, apple(s.opts.clock()), c.RowID)
		return err
	})
	return int(n), err
}

// SetError records a failed send: error > 0, finished, not sent. Messages
// shows the red exclamation mark for such a row.
func (s *Store) SetError(ctx context.Context, guid string, code int) error {
	if code <= 0 {
		return fmt.Errorf("sim: error code must be > 0, got %d", code)
	}
	return s.update(ctx, guid, `error = ?, is_sent = 0, is_finished = 1`, code)
}

// summaryOf reads and decodes message_summary_info of a row (an empty
// summary when the column is NULL) with its current text and date.
func summaryOf(ctx context.Context, tx *wtx, guid string) (*editinfo.Summary, string, time.Time, error) {
	var info []byte
	var date int64
	if err := tx.QueryRowContext(ctx, `SELECT message_summary_info, date FROM message WHERE guid = ?`, guid).Scan(&info, &date); err != nil {
		if err == sql.ErrNoRows {
			return nil, "", time.Time{}, fmt.Errorf("%w: %s", ErrNoMessage, guid)
		}
		return nil, "", time.Time{}, err
	}
	text, err := bodyText(ctx, tx, guid)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	sum := &editinfo.Summary{Parts: map[int][]editinfo.Version{}}
	if len(info) > 0 {
		if sum, err = editinfo.Decode(info); err != nil {
			return nil, "", time.Time{}, fmt.Errorf("sim: decode summary of %s: %w", guid, err)
		}
	}
	return sum, text, chatdb.FromAppleTime(date), nil
}

// Edit replaces the text of a part of a sent message as Messages does:
// message_summary_info gains the version history (the original first),
// attributedBody (and text, when filled) becomes the new text, and
// date_edited is set.
func (s *Store) Edit(ctx context.Context, guid string, part int, newText string) error {
	if newText == "" {
		return fmt.Errorf("sim: an edit needs text")
	}
	now := s.opts.clock()
	return s.tx(ctx, func(tx *wtx) error {
		sum, text, date, err := summaryOf(ctx, tx, guid)
		if err != nil {
			return err
		}
		if slices.Contains(sum.Unsent, part) {
			return fmt.Errorf("sim: part %d of %s was unsent", part, guid)
		}
		if len(sum.Parts[part]) == 0 {
			sum.Parts[part] = []editinfo.Version{{Text: text, Date: date}}
		}
		sum.Parts[part] = append(sum.Parts[part], editinfo.Version{Text: newText, Date: now})
		info, err := editinfo.Encode(*sum)
		if err != nil {
			return fmt.Errorf("sim: encode summary: %w", err)
		}
		var textCol any
		if s.opts.fillText {
			textCol = newText
		}
		_, err = tx.ExecContext(ctx, `UPDATE message SET attributedBody = ?, text = ?, message_summary_info = ?, date_edited = ? WHERE guid = ?`,
			typedstream.EncodeText(newText), textCol, info, apple(now), guid)
		return err
	})
}

// Unsend retracts a part of a sent message: date_retracted is set,
// message_summary_info lists the part as unsent, and the body is cleared.
func (s *Store) Unsend(ctx context.Context, guid string, part int) error {
	now := s.opts.clock()
	return s.tx(ctx, func(tx *wtx) error {
		sum, _, _, err := summaryOf(ctx, tx, guid)
		if err != nil {
			return err
		}
		if !slices.Contains(sum.Unsent, part) {
			sum.Unsent = append(sum.Unsent, part)
			slices.Sort(sum.Unsent)
		}
		sum.Deleted = true
		info, err := editinfo.Encode(*sum)
		if err != nil {
			return fmt.Errorf("sim: encode summary: %w", err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE message SET attributedBody = NULL, text = NULL, message_summary_info = ?, date_retracted = ? WHERE guid = ?`,
			info, apple(now), guid)
		return err
	})
}
