package chatdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/line-agent/line-agent/pkg/typedstream"
)

// MessageState is what chat.db says about one message right now. Drivers use
// it to acknowledge a command truthfully: a send is done when its row exists
// and is_sent is set, failed when error > 0.
type MessageState struct {
	RowID         int64
	GUID          string
	ChatGUID      string
	Service       string
	Text          string
	FromMe        bool
	Sent          bool
	Delivered     bool
	Read          bool
	Finished      bool
	Error         int
	Date          time.Time
	DateDelivered time.Time
	DateRead      time.Time
	DateEdited    time.Time
	DateRetracted time.Time
	// Tapback is the associated_message_type of a reaction row, 0 otherwise.
	Tapback int
}

func (c *converter) stateOf(r *row) MessageState {
	d := c.decode(r)
	return MessageState{
		RowID: r.RowID, GUID: r.GUID, ChatGUID: r.ChatGUID, Service: r.Service, Text: d.text,
		FromMe: r.FromMe, Sent: r.IsSent, Delivered: r.IsDelivered, Read: r.IsRead, Finished: r.IsFinished,
		Error: int(r.Error), Date: FromAppleTime(r.Date), DateDelivered: FromAppleTime(r.DateDelivered),
		DateRead: FromAppleTime(r.DateRead), DateEdited: FromAppleTime(r.DateEdited),
		DateRetracted: FromAppleTime(r.DateRetracted), Tapback: int(r.AssocType),
	}
}

func (r *Reader) converter() *converter {
	return &converter{line: r.opts.Line, home: r.opts.Home, clock: time.Now, log: r.log}
}

// LookupMessage returns the current state of the message with guid, or an
// error wrapping ErrNotFound.
func (r *Reader) LookupMessage(ctx context.Context, guid string) (MessageState, error) {
	if _, err := r.Refresh(ctx); err != nil {
		return MessageState{}, err
	}
	var out MessageState
	err := r.with(ctx, func(db *sql.DB, sc *schema) error {
		rows, err := queryRows(ctx, db, sc, "WHERE m.guid = ?", guid)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: message %s", ErrNotFound, guid)
		}
		out = r.converter().stateOf(rows[0])
		return nil
	})
	return out, err
}

// Window is where in chat.db the row of a send may lie. After, when
// Marked, is chat.db's newest message ROWID taken before the send could
// reach Messages (NewestRowID; 0 for an empty chat.db): message ROWIDs only
// grow (the column is AUTOINCREMENT), so every row the send writes lies
// above it whatever any clock says. Unmarked, rows dated at or after Since
// are taken, which a clock set back between Since and the row defeats.
// Rows above After are returned whatever their date: the caller judges a
// row dated before Since (the clock was set back, or the row came late
// from iCloud with its old date).
type Window struct {
	After  int64
	Marked bool
	Since  time.Time
}

// String is the window in words, for errors and logs.
func (w Window) String() string {
	if w.Marked {
		return fmt.Sprintf("after row %d", w.After)
	}
	return "since " + w.Since.UTC().Format(time.RFC3339Nano)
}

// NewestRowID is the ROWID of chat.db's newest message row, 0 when it has
// none: the mark a Window starts after, taken before a command may reach
// Messages.
func (r *Reader) NewestRowID(ctx context.Context) (int64, error) {
	if _, err := r.Refresh(ctx); err != nil {
		return 0, err
	}
	var id int64
	err := r.with(ctx, func(db *sql.DB, _ *schema) error {
		return db.QueryRowContext(ctx, `SELECT coalesce(max(ROWID), 0) FROM message`).Scan(&id)
	})
	return id, err
}

// FindOutgoing finds the row of a message this account sent to the chat
// (any service spelling of chatGUID) with exactly text, in the window w,
// and returns the earliest such row. AppleScript returns no GUID for a
// send; this is how the driver learns it and then follows is_sent and
// error. The window should be taken just before the send; text is compared
// after trimming surrounding white space, on the `text` column or the
// decoded attributedBody. It returns an error wrapping ErrNotFound when no
// row matches yet.
func (r *Reader) FindOutgoing(ctx context.Context, chatGUID, text string, w Window) (MessageState, error) {
	found, _, err := r.OutgoingIn(ctx, chatGUID, text, w)
	if err != nil {
		return MessageState{}, err
	}
	if len(found) == 0 {
		return MessageState{}, fmt.Errorf("%w: outgoing %q in %s %s", ErrNotFound, strings.TrimSpace(text), chatGUID, w)
	}
	return found[0], nil
}

// maxOutgoingScan bounds the outgoing rows OutgoingIn reads: a chat has
// few in the seconds or minutes after a send.
const maxOutgoingScan = 200

// OutgoingIn returns every row FindOutgoing would take for text (the same
// rule), earliest first (by ROWID when the window has a mark, else by
// date). complete is false when the chat had more outgoing rows in the
// window than are read at once: a match may lie beyond them. An unknown
// chat is an error wrapping ErrNotFound. After a crash the agent uses it to
// tell one match from none and from several.
func (r *Reader) OutgoingIn(ctx context.Context, chatGUID, text string, w Window) (found []MessageState, complete bool, err error) {
	want := strings.TrimSpace(text)
	where, order, bound := "m.date >= ?", "m.date, m.ROWID", any(ToAppleTime(w.Since))
	if w.Marked {
		where, order, bound = "m.ROWID > ?", "m.ROWID", w.After
	}
	// Candidate chats: same identifier under any service prefix.
	err = r.withChats(ctx, chatGUID, func(db *sql.DB, sc *schema, cs []ChatState) error {
		found = found[:0]
		chatIDs := rowIDs(cs)
		args := append(int64Args(chatIDs), bound)
		rows, err := queryRows(ctx, db, sc, `WHERE m.ROWID IN (SELECT j.message_id FROM chat_message_join j WHERE j.chat_id IN (`+placeholders(len(chatIDs))+`))
			AND m.is_from_me = 1 AND `+where+` AND coalesce(`+sc.col("message", "m", "associated_message_type", "0")+`, 0) = 0
			AND coalesce(`+sc.col("message", "m", "item_type", "0")+`, 0) = 0
			ORDER BY `+order+` LIMIT `+fmt.Sprint(maxOutgoingScan), args...)
		if err != nil {
			return err
		}
		complete = len(rows) < maxOutgoingScan
		for _, row := range rows {
			body := ""
			if row.Text.Valid && row.Text.String != "" {
				body = row.Text.String
			} else if len(row.Body) > 0 {
				if as, _ := typedstream.Decode(row.Body); as != nil {
					body = as.Text
				}
			}
			if strings.TrimSpace(body) == want {
				found = append(found, r.converter().stateOf(row))
			}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return found, complete, nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
