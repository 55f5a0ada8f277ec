package chatdb

// The read-only command kinds (get_message, get_chat) answered from
// chat.db. A message is decoded by the tailer's own converter, so a read
// tells exactly what the row's event told (text from attributedBody,
// attachments, reply target, effect), with the row's state as it is now:
// an edited message reads with its new text, an unsent one without.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// maxChatMembers bounds the participants a chat read returns: a group in
// Messages has far fewer, and a damaged database must not make one answer
// grow without bound.
const maxChatMembers = 1000

// ReadMessage returns the message row guid as chat.db shows it now: its own
// event (a message, a tapback or a group action, as the tailer builds it)
// and its update columns. An unknown guid, or a row of a kind the agent
// reports no event for (a FaceTime call), is NOT_FOUND; a chat.db that
// cannot be read is UNAVAILABLE. Errors are *command.Error.
func (r *Reader) ReadMessage(ctx context.Context, guid string) (*linev1.StoredMessage, error) {
	if guid == "" {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "get_message needs a message_guid")
	}
	if _, err := r.Refresh(ctx); err != nil {
		return nil, readFailure(err)
	}
	var out *linev1.StoredMessage
	err := r.with(ctx, func(db *sql.DB, sc *schema) error {
		rows, err := queryRows(ctx, db, sc, "WHERE m.guid = ?", guid)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			// Not "no chat ...": the relay tells a missing message from a
			// missing chat by that prefix.
			return command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "message %s is not in chat.db", guid)
		}
		out, err = r.converter().stored(rows[0])
		return err
	})
	if err != nil {
		return nil, readFailure(err)
	}
	return out, nil
}

// stored is a row as a get_message answer. The row's own event is the one
// events gives a row first seen whose state has not changed since: exactly
// the message, tapback or group event, none of the update events.
func (c *converter) stored(r *row) (*linev1.StoredMessage, error) {
	d := c.decode(r)
	evs := c.events(d, d.state, true, false)
	if len(evs) == 0 {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND,
			"message %s is a chat.db row the agent reports no event for (item_type %d, associated_message_type %d)", r.GUID, r.ItemType, r.AssocType)
	}
	s := &linev1.StoredMessage{
		Event: evs[0], Sent: r.IsSent, Delivered: r.IsDelivered, Read: r.IsRead, Error: int32(r.Error),
		DateDelivered: optionalTime(r.DateDelivered), DateRead: optionalTime(r.DateRead),
		DateEdited: optionalTime(r.DateEdited), DateRetracted: optionalTime(r.DateRetracted),
	}
	if d.summary != nil {
		for _, p := range d.summary.Unsent {
			s.UnsentParts = append(s.UnsentParts, int32(p))
		}
		slices.Sort(s.UnsentParts)
	}
	return s, nil
}

// optionalTime is a chat.db date as a timestamp, nil for 0 (never).
func optionalTime(v int64) *timestamppb.Timestamp {
	if v == 0 {
		return nil
	}
	return timestamppb.New(FromAppleTime(v))
}

// ReadChat returns the chat named by chatGUID (any service spelling: the
// exact one first when several exist) with its participants. An unknown
// chat is NOT_FOUND ("no chat ..."); a chat.db that cannot be read is
// UNAVAILABLE. Errors are *command.Error.
func (r *Reader) ReadChat(ctx context.Context, chatGUID string) (*linev1.StoredChat, error) {
	if chatGUID == "" {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "get_chat needs the chat's GUID as its target")
	}
	var out *linev1.StoredChat
	err := r.withChats(ctx, chatGUID, func(db *sql.DB, sc *schema, cs []ChatState) error {
		c := cs[0]
		out = &linev1.StoredChat{ChatGuid: c.GUID, Service: c.Service, Group: c.Group, DisplayName: c.DisplayName}
		col := func(name, fallback string) string {
			return "coalesce(" + sc.col("chat", "c", name, "NULL") + ", " + fallback + ")"
		}
		if err := db.QueryRowContext(ctx, `SELECT `+col("chat_identifier", "''")+`, `+col("group_id", "''")+`, `+
			col("is_archived", "0")+`, `+col("is_filtered", "0")+` FROM chat c WHERE c.ROWID = ?`, c.RowID).
			Scan(&out.ChatIdentifier, &out.GroupId, &out.Archived, &out.Filtered); err != nil {
			return fmt.Errorf("chatdb: read chat: %w", err)
		}
		// Every spelling of the conversation is one chat to its people:
		// their members together, each person once.
		ids := rowIDs(cs)
		rs, err := db.QueryContext(ctx, `SELECT h.id, coalesce(h.service, '') FROM chat_handle_join j JOIN handle h ON h.ROWID = j.handle_id
			WHERE j.chat_id IN (`+placeholders(len(ids))+`) ORDER BY j.chat_id, h.ROWID LIMIT ?`, append(int64Args(ids), maxChatMembers)...)
		if err != nil {
			return fmt.Errorf("chatdb: read chat members: %w", err)
		}
		defer rs.Close()
		seen := map[string]bool{}
		for rs.Next() {
			var m linev1.ChatMember
			if err := rs.Scan(&m.Handle, &m.Service); err != nil {
				return fmt.Errorf("chatdb: read chat members: %w", err)
			}
			if k := command.NormalizeLine(m.Handle); !seen[k] {
				seen[k] = true
				out.Participants = append(out.Participants, &m)
			}
		}
		return rs.Err()
	})
	if errors.Is(err, ErrNotFound) {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "no chat %s in chat.db", chatGUID)
	}
	if err != nil {
		return nil, readFailure(err)
	}
	return out, nil
}

// readFailure types a read's error: typed errors and the context's pass
// as they are; anything else is chat.db failing to answer, which may pass
// (a checkpoint, the database being replaced), so UNAVAILABLE.
func readFailure(err error) error {
	var ce *command.Error
	switch {
	case errors.As(err, &ce), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "chat.db could not be read: %w", err)
}
