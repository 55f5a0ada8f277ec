package sim

import (
	"context"
	"database/sql"
	"fmt"

	"howett.net/plist"

	"github.com/line-agent/line-agent/command"
)

// Group action codes (item_type / group_action_type) as Messages writes them.
const (
	ItemParticipant = 1 // group_action_type 0 added, 1 removed; other_handle names who
	ItemRenamed     = 2 // group_title holds the new name
	ItemChatAction  = 3 // group_action_type below

	ActionAdded   = 0
	ActionRemoved = 1

	ActionLeft              = 0
	ActionIconChanged       = 1
	ActionIconRemoved       = 2
	ActionBackgroundSet     = 4
	ActionBackgroundRemoved = 6
)

// groupRow writes a group-action row in chat from actor ("" = this account).
func (s *Store) groupRow(ctx context.Context, chatGUID, actor string, g GroupAction) (Row, error) {
	return s.Insert(ctx, Msg{Chat: chatGUID, FromMe: actor == "", Sender: actor, Group: &g, Sent: actor == ""})
}

// RenameGroup changes a group's name (chat.display_name) and writes the
// item_type 2 row that announces it. actor "" means this account did it.
func (s *Store) RenameGroup(ctx context.Context, chatGUID, actor, name string) (Row, error) {
	chatGUID = command.CanonicalChatGUID(chatGUID)
	if err := s.tx(ctx, func(tx *wtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE chat SET display_name = ? WHERE guid = ?`, name, chatGUID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", ErrNoChat, chatGUID)
		}
		return nil
	}); err != nil {
		return Row{}, err
	}
	return s.groupRow(ctx, chatGUID, actor, GroupAction{ItemType: ItemRenamed, Title: name})
}

// AddParticipant adds handle to a group (chat_handle_join) and writes the
// item_type 1 / group_action_type 0 row naming them in other_handle.
func (s *Store) AddParticipant(ctx context.Context, chatGUID, actor, handle string) (Row, error) {
	if err := s.tx(ctx, func(tx *wtx) error {
		c, err := loadChat(ctx, tx, chatGUID)
		if err != nil {
			return err
		}
		hid, err := ensureHandle(ctx, tx, handle, handleService(c.Service))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO chat_handle_join (chat_id, handle_id) VALUES (?, ?)`, c.RowID, hid)
		return err
	}); err != nil {
		return Row{}, err
	}
	return s.groupRow(ctx, chatGUID, actor, GroupAction{ItemType: ItemParticipant, ActionType: ActionAdded, Other: handle})
}

// RemoveParticipant removes handle from a group and writes the item_type 1 /
// group_action_type 1 row.
func (s *Store) RemoveParticipant(ctx context.Context, chatGUID, actor, handle string) (Row, error) {
	if err := s.removeMember(ctx, chatGUID, handle); err != nil {
		return Row{}, err
	}
	return s.groupRow(ctx, chatGUID, actor, GroupAction{ItemType: ItemParticipant, ActionType: ActionRemoved, Other: handle})
}

// LeaveGroup records that handle left the group (item_type 3 /
// group_action_type 0, written as a row from that handle).
func (s *Store) LeaveGroup(ctx context.Context, chatGUID, handle string) (Row, error) {
	if err := s.removeMember(ctx, chatGUID, handle); err != nil {
		return Row{}, err
	}
	return s.groupRow(ctx, chatGUID, handle, GroupAction{ItemType: ItemChatAction, ActionType: ActionLeft})
}

// SetGroupIcon records a changed (removed=false) or removed group photo
// (item_type 3 / group_action_type 1 or 2).
func (s *Store) SetGroupIcon(ctx context.Context, chatGUID, actor string, removed bool) (Row, error) {
	a := ActionIconChanged
	if removed {
		a = ActionIconRemoved
	}
	return s.groupRow(ctx, chatGUID, actor, GroupAction{ItemType: ItemChatAction, ActionType: a})
}

func (s *Store) removeMember(ctx context.Context, chatGUID, handle string) error {
	return s.tx(ctx, func(tx *wtx) error {
		c, err := loadChat(ctx, tx, chatGUID)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM chat_handle_join WHERE chat_id = ? AND handle_id IN (SELECT ROWID FROM handle WHERE id = ?)`, c.RowID, command.NormalizeLine(handle))
		return err
	})
}

// Background is a chat background as chat.properties records it once its
// iCloud asset is distributable (the "traba*" keys of backgroundProperties).
type Background struct {
	AssetID   string // trabaid
	URL       string // trabar: the MMCS locator
	Key       []byte // trabak
	Signature []byte // trabas
	Size      int64  // trabafs
	Version   int64  // trabav
	// ChannelGUID is backgroundChannelGUID; empty means a new one.
	ChannelGUID string
}

// SetBackground stores bg in the chat's properties plist and writes the
// item_type 3 / group_action_type 4 row, as Messages does once the
// background's asset was uploaded.
func (s *Store) SetBackground(ctx context.Context, chatGUID, actor string, bg Background) (Row, error) {
	if bg.AssetID == "" {
		return Row{}, fmt.Errorf("sim: a background needs an asset id")
	}
	if err := s.editProperties(ctx, chatGUID, func(p map[string]any) {
		if bg.ChannelGUID == "" {
			bg.ChannelGUID = s.newGUID()
		}
		p["backgroundChannelGUID"] = bg.ChannelGUID
		p["backgroundProperties"] = map[string]any{
			"trabaid": bg.AssetID, "trabar": bg.URL, "trabak": orEmpty(bg.Key), "trabas": orEmpty(bg.Signature),
			"trabafs": bg.Size, "trabav": bg.Version,
		}
	}); err != nil {
		return Row{}, err
	}
	return s.groupRow(ctx, chatGUID, actor, GroupAction{ItemType: ItemChatAction, ActionType: ActionBackgroundSet})
}

// ClearBackground removes the chat's background from its properties and
// writes the item_type 3 / group_action_type 6 row.
func (s *Store) ClearBackground(ctx context.Context, chatGUID, actor string) (Row, error) {
	if err := s.editProperties(ctx, chatGUID, func(p map[string]any) {
		delete(p, "backgroundProperties")
		delete(p, "backgroundChannelGUID")
	}); err != nil {
		return Row{}, err
	}
	return s.groupRow(ctx, chatGUID, actor, GroupAction{ItemType: ItemChatAction, ActionType: ActionBackgroundRemoved})
}

func orEmpty(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// editProperties rewrites chat.properties (a binary plist) through f,
// keeping the keys f does not touch.
func (s *Store) editProperties(ctx context.Context, chatGUID string, f func(map[string]any)) error {
	chatGUID = command.CanonicalChatGUID(chatGUID)
	return s.tx(ctx, func(tx *wtx) error {
		var raw []byte
		if err := tx.QueryRowContext(ctx, `SELECT properties FROM chat WHERE guid = ?`, chatGUID).Scan(&raw); err != nil {
			if err == sql.ErrNoRows {
				return fmt.Errorf("%w: %s", ErrNoChat, chatGUID)
			}
			return err
		}
		props := map[string]any{}
		if len(raw) > 0 {
			if _, err := plist.Unmarshal(raw, &props); err != nil {
				return fmt.Errorf("sim: chat %s properties: %w", chatGUID, err)
			}
		}
		f(props)
		out, err := plist.Marshal(props, plist.BinaryFormat)
		if err != nil {
			return fmt.Errorf("sim: encode properties: %w", err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE chat SET properties = ? WHERE guid = ?`, out, chatGUID)
		return err
	})
}
