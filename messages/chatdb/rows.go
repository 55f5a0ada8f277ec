package chatdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// row is one message row with everything the events need.
type row struct {
	RowID         int64
	GUID          string
	Text          sql.NullString
	Body          []byte
	Handle        string // sender (handle.id of handle_id)
	Service       string
	Account       string
	DestCallerID  string
	FromMe        bool
	Date          int64
	DateRead      int64
	DateDelivered int64
	IsDelivered   bool
	IsRead        bool
	IsSent        bool
	IsFinished    bool
	Error         int64
	ItemType      int64
	GroupAction   int64
	OtherHandle   string
	GroupTitle    string
	AssocGUID     string
	AssocType     int64
	AssocEmoji    string
	Effect        string
	ThreadGUID    string
	ThreadPart    string
	DateEdited    int64
	DateRetracted int64
	Summary       []byte
	Subject       string
	HasAttach     bool
	ChatGUID      string
	ChatLogin     string
	Attachments   []attachmentRow
}

type attachmentRow struct {
	GUID, Filename, MIME, TransferName string
	Size                               int64
	TransferState                      int64
	Sticker                            bool
}

// rowColumns is the SELECT list for row, adapted to the schema: a column this
// chat.db lacks reads as NULL or 0.
func rowColumns(sc *schema) string {
	m := func(col, fallback string) string { return sc.col("message", "m", col, fallback) }
	cols := []string{
		"m.ROWID", "m.guid", m("text", "NULL"), m("attributedBody", "NULL"),
		"coalesce(h.id, '')", "coalesce(" + m("service", "NULL") + ", '')", "coalesce(" + m("account", "NULL") + ", '')",
		"coalesce(" + m("destination_caller_id", "NULL") + ", '')",
		"coalesce(m.is_from_me, 0)", "coalesce(m.date, 0)", "coalesce(" + m("date_read", "0") + ", 0)", "coalesce(" + m("date_delivered", "0") + ", 0)",
		"coalesce(" + m("is_delivered", "0") + ", 0)", "coalesce(" + m("is_read", "0") + ", 0)", "coalesce(" + m("is_sent", "0") + ", 0)", "coalesce(" + m("is_finished", "0") + ", 0)",
		"coalesce(" + m("error", "0") + ", 0)", "coalesce(" + m("item_type", "0") + ", 0)", "coalesce(" + m("group_action_type", "0") + ", 0)",
		"coalesce(oh.id, '')", "coalesce(" + m("group_title", "NULL") + ", '')",
		"coalesce(" + m("associated_message_guid", "NULL") + ", '')", "coalesce(" + m("associated_message_type", "0") + ", 0)",
		"coalesce(" + m("associated_message_emoji", "NULL") + ", '')",
		"coalesce(" + m("expressive_send_style_id", "NULL") + ", '')",
		"coalesce(" + m("thread_originator_guid", "NULL") + ", '')", "coalesce(" + m("thread_originator_part", "NULL") + ", '')",
		"coalesce(" + m("date_edited", "0") + ", 0)", "coalesce(" + m("date_retracted", "0") + ", 0)",
		m("message_summary_info", "NULL"), "coalesce(" + m("subject", "NULL") + ", '')",
		"coalesce(" + m("cache_has_attachments", "1") + ", 0)",
		"coalesce(c.guid, '')", "coalesce(" + sc.col("chat", "c", "account_login", "NULL") + ", '')",
	}
	return strings.Join(cols, ", ")
}

// rowFrom is the FROM clause matching rowColumns. A message joins the chat
// with the smallest ROWID it belongs to (a message is in one chat in
// practice).
func rowFrom(sc *schema) string {
	oh := "LEFT JOIN handle oh ON 0"
	if sc.has("message", "other_handle") {
		oh = "LEFT JOIN handle oh ON oh.ROWID = m.other_handle AND m.other_handle != 0"
	}
	return ` FROM message m
		LEFT JOIN handle h ON h.ROWID = m.handle_id AND m.handle_id != 0
		` + oh + `
		LEFT JOIN chat c ON c.ROWID = (SELECT j.chat_id FROM chat_message_join j WHERE j.message_id = m.ROWID ORDER BY j.chat_id LIMIT 1)`
}

func scanRow(rows *sql.Rows) (*row, error) {
	var r row
	err := rows.Scan(&r.RowID, &r.GUID, &r.Text, &r.Body, &r.Handle, &r.Service, &r.Account, &r.DestCallerID,
		&r.FromMe, &r.Date, &r.DateRead, &r.DateDelivered, &r.IsDelivered, &r.IsRead, &r.IsSent, &r.IsFinished,
		&r.Error, &r.ItemType, &r.GroupAction, &r.OtherHandle, &r.GroupTitle, &r.AssocGUID, &r.AssocType,
		&r.AssocEmoji, &r.Effect, &r.ThreadGUID, &r.ThreadPart, &r.DateEdited, &r.DateRetracted, &r.Summary,
		&r.Subject, &r.HasAttach, &r.ChatGUID, &r.ChatLogin)
	if err != nil {
		return nil, fmt.Errorf("chatdb: scan message row: %w", err)
	}
	return &r, nil
}

// queryRows runs a row query (rowColumns + rowFrom + where) and loads the
// attachments of the rows that have any.
func queryRows(ctx context.Context, db querier, sc *schema, where string, args ...any) ([]*row, error) {
	q := "SELECT " + rowColumns(sc) + rowFrom(sc) + " " + where
	rs, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("chatdb: query messages: %w", err)
	}
	var out []*row
	for rs.Next() {
		r, err := scanRow(rs)
		if err != nil {
			rs.Close()
			return nil, err
		}
		out = append(out, r)
	}
	rs.Close()
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("chatdb: query messages: %w", err)
	}
	if err := loadAttachments(ctx, db, sc, out); err != nil {
		return nil, err
	}
	return out, nil
}

// loadAttachments fills Attachments of the rows flagged as having any, in
// one query per call.
func loadAttachments(ctx context.Context, db querier, sc *schema, rows []*row) error {
	if len(sc.cols["attachment"]) == 0 || len(sc.cols["message_attachment_join"]) == 0 {
		return nil
	}
	byID := map[int64]*row{}
	var ids []string
	var args []any
	for _, r := range rows {
		if r.HasAttach {
			byID[r.RowID] = r
			ids = append(ids, "?")
			args = append(args, r.RowID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	a := func(col, fallback string) string {
		return "coalesce(" + sc.col("attachment", "a", col, fallback) + ", " + fallback + ")"
	}
	q := `SELECT j.message_id, a.guid, ` + a("filename", "''") + `, ` + a("mime_type", "''") + `, ` + a("transfer_name", "''") + `, ` +
		a("total_bytes", "0") + `, ` + a("transfer_state", "0") + `, ` + a("is_sticker", "0") + `
		FROM message_attachment_join j JOIN attachment a ON a.ROWID = j.attachment_id
		WHERE j.message_id IN (` + strings.Join(ids, ",") + `) ORDER BY j.message_id, a.ROWID`
	rs, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("chatdb: query attachments: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		var mid int64
		var at attachmentRow
		if err := rs.Scan(&mid, &at.GUID, &at.Filename, &at.MIME, &at.TransferName, &at.Size, &at.TransferState, &at.Sticker); err != nil {
			return fmt.Errorf("chatdb: scan attachment: %w", err)
		}
		if r := byID[mid]; r != nil {
			r.Attachments = append(r.Attachments, at)
		}
	}
	return rs.Err()
}

// querier is what queries need: a *sql.DB, *sql.Conn or *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}
