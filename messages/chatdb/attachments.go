package chatdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// AttachmentFile is what chat.db says about one attachment and its file,
// for serving the file: where Messages keeps it, what it is, whether it is
// whole yet, and which message, chat and line it belongs to.
type AttachmentFile struct {
	GUID string
	// Path is attachment.filename exactly as Messages stored it, usually
	// "~/Library/Messages/Attachments/..."; the caller decides what "~"
	// means and where a file may be served from.
	Path string
	// Name is the file's name as sent (transfer_name).
	Name string
	MIME string
	UTI  string
	// Size is total_bytes as chat.db records it.
	Size int64
	// TransferState is attachment.transfer_state; 5 means the file is whole.
	TransferState int64
	Outgoing      bool
	Sticker       bool
	MessageGUID   string
	ChatGUID      string
	// Line is the account the message belongs to (as events name it).
	Line string
}

// Finished reports whether Messages has the whole file.
func (a AttachmentFile) Finished() bool { return a.TransferState == transferFinished }

// LookupAttachment returns the attachment with guid and its message, or an
// error wrapping ErrNotFound when chat.db has no such attachment (or no
// message holds it).
func (r *Reader) LookupAttachment(ctx context.Context, guid string) (AttachmentFile, error) {
	if _, err := r.Refresh(ctx); err != nil {
		return AttachmentFile{}, err
	}
	var out AttachmentFile
	err := r.with(ctx, func(db *sql.DB, sc *schema) error {
		if len(sc.cols["attachment"]) == 0 || len(sc.cols["message_attachment_join"]) == 0 {
			return fmt.Errorf("%w: this chat.db has no attachment table", ErrNotFound)
		}
		a := func(col, fallback string) string {
			return "coalesce(" + sc.col("attachment", "a", col, fallback) + ", " + fallback + ")"
		}
		var msgID sql.NullInt64
		err := db.QueryRowContext(ctx, `SELECT a.guid, `+a("filename", "''")+`, `+a("transfer_name", "''")+`, `+a("mime_type", "''")+`, `+
			a("uti", "''")+`, `+a("total_bytes", "0")+`, `+a("transfer_state", "0")+`, `+a("is_outgoing", "0")+`, `+a("is_sticker", "0")+`,
			(SELECT j.message_id FROM message_attachment_join j WHERE j.attachment_id = a.ROWID ORDER BY j.message_id LIMIT 1)
			FROM attachment a WHERE a.guid = ?`, guid).Scan(
			&out.GUID, &out.Path, &out.Name, &out.MIME, &out.UTI, &out.Size, &out.TransferState, &out.Outgoing, &out.Sticker, &msgID)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("%w: attachment %s", ErrNotFound, guid)
		case err != nil:
			return fmt.Errorf("chatdb: read attachment: %w", err)
		case !msgID.Valid:
			return fmt.Errorf("%w: attachment %s belongs to no message", ErrNotFound, guid)
		}
		rows, err := queryRows(ctx, db, sc, "WHERE m.ROWID = ?", msgID.Int64)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: attachment %s belongs to no message", ErrNotFound, guid)
		}
		out.MessageGUID, out.ChatGUID, out.Line = rows[0].GUID, rows[0].ChatGUID, r.converter().lineOf(rows[0])
		return nil
	})
	return out, err
}
