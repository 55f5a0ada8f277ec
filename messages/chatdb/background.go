package chatdb

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"howett.net/plist"
)

// Chat-action codes of the rows that announce a background change
// (message.item_type / message.group_action_type).
const (
	itemChatAction          = 3
	actionBackgroundSet     = 4
	actionBackgroundRemoved = 6
)

// Background is a chat's background as chat.properties (a binary plist)
// records it: the "traba*" keys of backgroundProperties. Messages writes them
// only once the background's iCloud asset was uploaded, so a Background for a
// new asset with a locator, key and signature is the evidence that the asset
// is distributable.
//
// The asset's key (trabak) and signature (trabas) are secrets that let anyone
// holding the locator download and decrypt the image: Background records only
// whether they are present, and String never prints anything secret.
type Background struct {
	// Set is true when the properties carry backgroundProperties.
	Set bool
	// ChannelGUID is backgroundChannelGUID.
	ChannelGUID string
	// AssetID is trabaid.
	AssetID string
	// Locator is trabar, the iCloud (MMCS) locator URL of the asset.
	Locator string
	// Size is trabafs, the asset's size in bytes.
	Size int64
	// Version is trabav.
	Version int64
	// HasKey and HasSignature report a non-empty trabak and trabas.
	HasKey, HasSignature bool
}

// Complete reports whether b names an asset others can fetch: an asset id, a
// locator, a key and a signature.
func (b Background) Complete() bool {
	return b.Set && b.AssetID != "" && b.Locator != "" && b.HasKey && b.HasSignature
}

// String describes b without its locator's query, key or signature.
func (b Background) String() string {
	if !b.Set {
		return "no background"
	}
	loc := "none"
	if b.Locator != "" {
		loc = "present"
	}
	return fmt.Sprintf("background asset %q size %d version %d locator %s key %t signature %t",
		b.AssetID, b.Size, b.Version, loc, b.HasKey, b.HasSignature)
}

// BackgroundRow is an item_type 3 row announcing that a chat's background was
// set (group_action_type 4) or removed (6).
type BackgroundRow struct {
	RowID    int64
	GUID     string
	ChatGUID string
	// Removed is true for a removal (6), false for a set (4).
	Removed bool
	FromMe  bool
	Date    time.Time
}

// ChatBackground decodes the background recorded in the properties of the
// chat chatGUID names (any service spelling; the exact GUID is preferred).
// A chat without a background returns Background{Set: false}; an unknown
// chat returns an error wrapping ErrNotFound.
func (r *Reader) ChatBackground(ctx context.Context, chatGUID string) (Background, error) {
	var out Background
	err := r.withChats(ctx, chatGUID, func(db *sql.DB, _ *schema, chats []ChatState) error {
		// The exact spelling first, then any other spelling that has a
		// background (macOS 26 keeps "any;-;x" next to "iMessage;-;x").
		for _, c := range chats {
			var raw []byte
			if err := db.QueryRowContext(ctx, `SELECT properties FROM chat WHERE ROWID = ?`, c.RowID).Scan(&raw); err != nil {
				return fmt.Errorf("chatdb: chat %s properties: %w", chatGUID, err)
			}
			bg, err := decodeBackground(raw)
			if err != nil {
				return fmt.Errorf("chatdb: chat %s properties: %w", chatGUID, err)
			}
			if bg.Set || c.GUID == chatGUID {
				out = bg
				if bg.Set {
					return nil
				}
			}
		}
		return nil
	})
	return out, err
}

// BackgroundRow returns the latest background-set or background-removed row
// (item_type 3, group_action_type 4 or 6) of the chat chatGUID names (any
// service spelling) dated at or after since. It returns an error wrapping
// ErrNotFound when there is none.
func (r *Reader) BackgroundRow(ctx context.Context, chatGUID string, since time.Time) (BackgroundRow, error) {
	var out BackgroundRow
	err := r.withChats(ctx, chatGUID, func(db *sql.DB, sc *schema, chats []ChatState) error {
		ids := rowIDs(chats)
		guids := map[int64]string{}
		for _, c := range chats {
			guids[c.RowID] = c.GUID
		}
		args := append(int64Args(ids), ToAppleTime(since))
		// Chat backgrounds exist only on macOS 26, whose dates are
		// nanoseconds: comparing with ToAppleTime is exact.
		q := `SELECT m.ROWID, m.guid, j.chat_id, ` + sc.col("message", "m", "group_action_type", "0") + `, m.is_from_me, m.date
			FROM message m JOIN chat_message_join j ON j.message_id = m.ROWID
			WHERE j.chat_id IN (` + placeholders(len(ids)) + `)
			AND ` + sc.col("message", "m", "item_type", "0") + ` = ` + strconv.Itoa(itemChatAction) + `
			AND ` + sc.col("message", "m", "group_action_type", "0") + ` IN (` + strconv.Itoa(actionBackgroundSet) + `, ` + strconv.Itoa(actionBackgroundRemoved) + `)
			AND m.date >= ?
			ORDER BY m.date DESC, m.ROWID DESC LIMIT 1`
		var (
			row      BackgroundRow
			chatID   int64
			action   int64
			fromMe   int64
			date     int64
			guidNull sql.NullString
		)
		err := db.QueryRowContext(ctx, q, args...).Scan(&row.RowID, &guidNull, &chatID, &action, &fromMe, &date)
		if err == sql.ErrNoRows {
			return fmt.Errorf("%w: background row in %s since %s", ErrNotFound, chatGUID, since.Format(time.RFC3339Nano))
		}
		if err != nil {
			return fmt.Errorf("chatdb: background row: %w", err)
		}
		row.GUID = guidNull.String
		row.ChatGUID = guids[chatID]
		row.Removed = action == actionBackgroundRemoved
		row.FromMe = fromMe != 0
		row.Date = FromAppleTime(date)
		out = row
		return nil
	})
	return out, err
}

// decodeBackground reads backgroundProperties out of a chat.properties plist.
// Empty or NULL properties mean no background.
func decodeBackground(raw []byte) (Background, error) {
	if len(raw) == 0 {
		return Background{}, nil
	}
	var props map[string]any
	if _, err := plist.Unmarshal(raw, &props); err != nil {
		return Background{}, err
	}
	bp, ok := props["backgroundProperties"].(map[string]any)
	if !ok {
		return Background{}, nil
	}
	bg := Background{Set: true}
	bg.ChannelGUID, _ = props["backgroundChannelGUID"].(string)
	bg.AssetID = plistString(bp["trabaid"])
	bg.Locator = plistString(bp["trabar"])
	bg.Size = plistInt(bp["trabafs"])
	bg.Version = plistInt(bp["trabav"])
	bg.HasKey = plistNonEmpty(bp["trabak"])
	bg.HasSignature = plistNonEmpty(bp["trabas"])
	return bg, nil
}

func plistString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return ""
}

func plistInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case uint64:
		return int64(x)
	case float64:
		return int64(x)
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

func plistNonEmpty(v any) bool {
	switch x := v.(type) {
	case []byte:
		return len(x) > 0
	case string:
		return x != ""
	}
	return false
}
