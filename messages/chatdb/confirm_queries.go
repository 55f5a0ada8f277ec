package chatdb

// Queries the command confirmer (messages/confirm) needs to acknowledge
// commands truthfully: a chat's row and name, a tapback row by target and
// code, and the unread incoming rows of a chat. All are read-only, run
// through Reader.with like every other query, and bounded.

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
)

// ChatState is what chat.db says about one chat right now.
type ChatState struct {
	RowID       int64
	GUID        string
	Service     string
	DisplayName string
	// Group is true for style 43.
	Group bool
}

// chatsLike returns the chats whose GUID names the same conversation as
// chatGUID under any service spelling (command.ChatKey), the exact spelling
// first and then lowest ROWID first, or an error wrapping ErrNotFound.
func chatsLike(ctx context.Context, db querier, sc *schema, chatGUID string) ([]ChatState, error) {
	key := command.ChatKey(chatGUID)
	name := "coalesce(" + sc.col("chat", "c", "display_name", "NULL") + ", '')"
	svc := "coalesce(" + sc.col("chat", "c", "service_name", "NULL") + ", '')"
	style := "coalesce(" + sc.col("chat", "c", "style", "0") + ", 0)"
	rs, err := db.QueryContext(ctx, `SELECT c.ROWID, c.guid, `+svc+`, `+name+`, `+style+`
		FROM chat c WHERE c.guid LIKE ? ESCAPE '\' ORDER BY c.ROWID LIMIT 16`, chatLikePattern(chatGUID))
	if err != nil {
		return nil, fmt.Errorf("chatdb: find chat: %w", err)
	}
	defer rs.Close()
	var out []ChatState
	for rs.Next() {
		var c ChatState
		var st int64
		if err := rs.Scan(&c.RowID, &c.GUID, &c.Service, &c.DisplayName, &st); err != nil {
			return nil, fmt.Errorf("chatdb: scan chat: %w", err)
		}
		c.Group = st == 43
		switch {
		case command.ChatKey(c.GUID) != key:
		case c.GUID == chatGUID:
			out = append([]ChatState{c}, out...)
		default:
			out = append(out, c)
		}
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: chat %s", ErrNotFound, chatGUID)
	}
	return out, nil
}

// withChats refreshes the reader and runs f with the chats chatGUID names
// under any service spelling (chatsLike: never none, the exact spelling
// first); an unknown chat is an error wrapping ErrNotFound.
func (r *Reader) withChats(ctx context.Context, chatGUID string, f func(db *sql.DB, sc *schema, chats []ChatState) error) error {
	if _, err := r.Refresh(ctx); err != nil {
		return err
	}
	return r.with(ctx, func(db *sql.DB, sc *schema) error {
		chats, err := chatsLike(ctx, db, sc, chatGUID)
		if err != nil {
			return err
		}
		return f(db, sc, chats)
	})
}

// rowIDs lists the chats' ROWIDs, in order.
func rowIDs(cs []ChatState) []int64 {
	ids := make([]int64, len(cs))
	for i, c := range cs {
		ids[i] = c.RowID
	}
	return ids
}

// LookupChat returns the chat named by chatGUID (any service spelling; the
// exact spelling first when several exist), or an error wrapping
// ErrNotFound.
func (r *Reader) LookupChat(ctx context.Context, chatGUID string) (ChatState, error) {
	var out ChatState
	err := r.withChats(ctx, chatGUID, func(_ *sql.DB, _ *schema, cs []ChatState) error {
		out = cs[0]
		return nil
	})
	return out, err
}

// FindTapback returns the newest reaction row this account wrote on part
// of the message target with associated_message_type code (2000.. for a
// tapback, 3000.. for its removal), or an error wrapping ErrNotFound.
func (r *Reader) FindTapback(ctx context.Context, target string, part, code int) (MessageState, error) {
	if _, err := r.Refresh(ctx); err != nil {
		return MessageState{}, err
	}
	var out MessageState
	err := r.with(ctx, func(db *sql.DB, sc *schema) error {
		if !sc.has("message", "associated_message_guid") || !sc.has("message", "associated_message_type") {
			return fmt.Errorf("%w: this chat.db has no tapback columns", ErrNotFound)
		}
		rows, err := queryRows(ctx, db, sc, `WHERE m.associated_message_guid = ? AND m.associated_message_type = ? AND m.is_from_me = 1
			ORDER BY m.ROWID DESC LIMIT 1`, effects.FormatAssociatedGUID(target, part), code)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: tapback %d on %s part %d", ErrNotFound, code, target, part)
		}
		out = r.converter().stateOf(rows[0])
		return nil
	})
	return out, err
}

// UnreadIncoming counts the incoming, unread plain messages of the chat
// named by chatGUID (any service spelling): what Messages counts as unread
// and marks read when the chat is read. Rows with an item_type (group
// events) and rows with an associated_message_type (tapbacks 2000..2007,
// their removals 3000..3007, stickers placed 1000) are not counted: Messages
// does not mark them read with the chat, so a chat where the other person
// reacted would never reach zero. Marking the chat read brings it to zero.
func (r *Reader) UnreadIncoming(ctx context.Context, chatGUID string) (int, error) {
	var n int
	err := r.withChats(ctx, chatGUID, func(db *sql.DB, sc *schema, cs []ChatState) error {
		ids := rowIDs(cs)
		q := `SELECT count(*) FROM message m WHERE m.ROWID IN (SELECT j.message_id FROM chat_message_join j WHERE j.chat_id IN (` + placeholders(len(ids)) + `))
			AND m.is_from_me = 0 AND coalesce(` + sc.col("message", "m", "is_read", "1") + `, 0) = 0
			AND coalesce(` + sc.col("message", "m", "item_type", "0") + `, 0) = 0
			AND coalesce(` + sc.col("message", "m", "associated_message_type", "0") + `, 0) = 0`
		return db.QueryRowContext(ctx, q, int64Args(ids)...).Scan(&n)
	})
	return n, err
}
