package sim

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/pkg/typedstream"
)

// Msg is one message row to write. The zero values give a plain incoming
// iMessage dated now; fields map to the chat.db columns named in comments.
type Msg struct {
	// Chat is the GUID of a chat created with EnsureChat.
	Chat string
	// GUID is the row's guid; empty means a new uppercase UUID.
	GUID string
	// FromMe marks a row this account sent (is_from_me), here or on another
	// of the account's devices.
	FromMe bool
	// Sender is the handle of the person who wrote an incoming row
	// (handle_id). For an incoming row in a one-to-one chat it defaults to
	// the chat's participant.
	Sender string
	// Text is the body. It is stored in attributedBody (and in text only
	// with WithText).
	Text string
	// Subject is the optional subject line (subject).
	Subject string
	// Date is when the message was sent (date); zero means the Store's now.
	Date time.Time
	// Service is "iMessage", "SMS" or "RCS"; empty means the chat's service
	// ("iMessage" for "any" chats).
	Service string
	// Effect is an expressive send style: a name ("slam") or Apple id
	// (expressive_send_style_id).
	Effect string
	// ReplyTo makes the row an inline reply to that message's part
	// (thread_originator_guid, thread_originator_part).
	ReplyTo     string
	ReplyToPart int
	// Tapback makes the row a reaction instead of a message.
	Tapback *Tapback
	// Group makes the row a group or chat action instead of a message.
	Group *GroupAction
	// Attachments are files in the message, each a U+FFFC in the text.
	Attachments []Attachment
	// Sent, Delivered and Read set the row's state at insert; normally they
	// change later through MarkSent, MarkDelivered and MarkRead.
	Sent, Delivered, Read bool
	// Error is a send failure code (error); it also marks the row finished.
	Error int
}

// Tapback is a reaction row: associated_message_guid "p:<part>/<target>",
// associated_message_type Code (2000..2007, removal 3000..3007) and, for
// emoji tapbacks, associated_message_emoji.
type Tapback struct {
	Target string
	Part   int
	// Code is the associated_message_type; see effects.Associated.
	Code  int
	Emoji string
}

// GroupAction is a group or chat event row (item_type, group_action_type,
// other_handle, group_title) as listed in messages-facts.md.
type GroupAction struct {
	ItemType   int
	ActionType int
	// Other is the participant added or removed (other_handle).
	Other string
	// Title is the new group name (group_title) for item_type 2.
	Title string
}

// Attachment is a file row joined to a message.
type Attachment struct {
	// GUID defaults to a new one ("at_0_<UUID>" style is not used: Messages
	// writes a plain UUID for attachments it receives).
	GUID string
	// Name is the file's name (transfer_name); the path is derived.
	Name string
	MIME string
	UTI  string
	Size int64
	// TransferState defaults to 5 (finished). Any other value is a file
	// Messages is still receiving: FinishTransfer completes it later.
	TransferState int
	Sticker       bool
	// Data is the file's content, written into the simulated attachments
	// folder (AttachmentsDir) where the row says it is; Size defaults to
	// its length. A file still transferring gets only its first half.
	Data []byte
	// Filename, when set, is stored as attachment.filename instead of
	// Messages' own layout, and no file is written: a row that points
	// somewhere else, as a damaged or hostile chat.db might.
	Filename string
}

// Row identifies a written message row.
type Row struct {
	RowID int64
	GUID  string
}

// Insert writes m and its joins in one transaction, as Messages commits a
// new row, and returns its ROWID and GUID.
func (s *Store) Insert(ctx context.Context, m Msg) (Row, error) {
	rows, err := s.InsertBatch(ctx, []Msg{m})
	if err != nil {
		return Row{}, err
	}
	return rows[0], nil
}

// InsertBatch writes all of msgs in ONE transaction: the burst a reader must
// take in bounded batches (iCloud sync, a restored backlog).
func (s *Store) InsertBatch(ctx context.Context, msgs []Msg) ([]Row, error) {
	out := make([]Row, 0, len(msgs))
	err := s.tx(ctx, func(tx *wtx) error {
		out = out[:0]
		chats := map[string]Chat{}
		for i := range msgs {
			r, err := s.insertTx(ctx, tx, msgs[i], chats)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// insertTx writes one row. Callers hold s.mu (through s.tx).
func (s *Store) insertTx(ctx context.Context, tx *wtx, m Msg, chats map[string]Chat) (Row, error) {
	chat, ok := chats[m.Chat]
	if !ok {
		c, err := loadChat(ctx, tx, m.Chat)
		if err != nil {
			return Row{}, err
		}
		chat, chats[m.Chat] = c, c
	}
	if m.GUID == "" {
		m.GUID = s.newGUID()
	}
	if m.Date.IsZero() {
		m.Date = s.opts.clock()
	}
	service := m.Service
	if service == "" {
		service = handleService(chat.Service)
	}
	date := apple(m.Date)

	// handle_id: the sender of an incoming row; for an outgoing row in a
	// one-to-one chat the recipient; 0 for outgoing group rows.
	var handleID int64
	switch {
	case m.Sender != "":
		id, err := ensureHandle(ctx, tx, m.Sender, service)
		if err != nil {
			return Row{}, err
		}
		handleID = id
	case !chat.IsGroup() && len(chat.Participants) > 0:
		id, err := ensureHandle(ctx, tx, chat.Participants[0], service)
		if err != nil {
			return Row{}, err
		}
		handleID = id
	case !m.FromMe:
		return Row{}, fmt.Errorf("sim: an incoming row in group %s needs a Sender", chat.GUID)
	}

	text := m.Text
	var body []byte
	var err error
	var assocGUID, assocEmoji, effect, threadGUID, threadPart, groupTitle any
	assocType, itemType, groupAction := 0, 0, 0
	var otherHandle int64

	switch {
	case m.Tapback != nil:
		tb := m.Tapback
		if _, _, ok := effects.Associated(tb.Code); !ok {
			return Row{}, fmt.Errorf("sim: %d is not a tapback code", tb.Code)
		}
		assocGUID, assocType = effects.FormatAssociatedGUID(tb.Target, tb.Part), tb.Code
		if tb.Emoji != "" {
			assocEmoji = tb.Emoji
		}
		// Messages stores a readable summary as the body of a tapback row;
		// older tapbacks from the same sender on the same target are deleted:
		// only the latest survives.
		orig, _ := bodyText(ctx, tx, tb.Target)
		text = tapbackSummary(tb, orig)
		if err := deleteOlderTapbacks(ctx, tx, assocGUID.(string), m.FromMe, handleID); err != nil {
			return Row{}, err
		}
	case m.Group != nil:
		itemType, groupAction = m.Group.ItemType, m.Group.ActionType
		if m.Group.Other != "" {
			if otherHandle, err = ensureHandle(ctx, tx, m.Group.Other, service); err != nil {
				return Row{}, err
			}
		}
		if m.Group.Title != "" {
			groupTitle = m.Group.Title
		}
		text = ""
	}
	if m.Effect != "" {
		e, err := effects.Lookup(m.Effect)
		if err != nil {
			effect = m.Effect // an id the catalog does not know: store as given
		} else {
			effect = e.ID
		}
	}
	if m.ReplyTo != "" {
		orig, _ := bodyText(ctx, tx, m.ReplyTo)
		threadGUID = m.ReplyTo
		threadPart = fmt.Sprintf("%d:0:%d", m.ReplyToPart, utf16Len(orig))
	}

	// The body: text with one U+FFFC per attachment, each its own part.
	atts := make([]Attachment, len(m.Attachments))
	copy(atts, m.Attachments)
	for i := range atts {
		if atts[i].GUID == "" {
			atts[i].GUID = s.newGUID()
		}
	}
	switch {
	case len(atts) > 0:
		body, text, err = attachmentBody(text, atts)
		if err != nil {
			return Row{}, err
		}
	case text != "":
		body = typedstream.EncodeText(text)
	}
	var textCol any
	if s.opts.fillText && text != "" {
		textCol = text
	}
	var bodyCol any
	if body != nil {
		bodyCol = body
	}
	var subject any
	if m.Subject != "" {
		subject = m.Subject
	}

	isFinished, isSent, isDelivered, isRead := 1, 0, 0, 0
	var dateDelivered, dateRead int64
	if m.FromMe {
		isFinished = 0
		if m.Sent {
			isSent, isFinished = 1, 1
		}
		if m.Delivered {
			isDelivered, dateDelivered = 1, date
		}
		if m.Error > 0 {
			isFinished = 1
		}
	} else {
		isDelivered = 1 // Messages marks every received row delivered
	}
	if m.Read {
		isRead, dateRead = 1, date
	}
	if m.Tapback != nil || m.Group != nil {
		if m.FromMe {
			isSent, isFinished = 1, 1
		}
	}
	partCount := any(nil)
	if m.Tapback == nil && m.Group == nil {
		partCount = max(1, len(atts)+btoi(m.Text != "" && len(atts) > 0))
	}

	res, err := tx.ExecContext(ctx, `INSERT INTO message (guid, text, handle_id, subject, attributedBody, service, account, account_guid, error, date, date_read, date_delivered,
		is_delivered, is_finished, is_from_me, is_read, is_sent, item_type, other_handle, group_title, group_action_type,
		associated_message_guid, associated_message_type, associated_message_emoji, expressive_send_style_id,
		destination_caller_id, thread_originator_guid, thread_originator_part, part_count, sort_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`,
		m.GUID, textCol, handleID, subject, bodyCol, service, accountOf(chat.Line), accountGUID(chat.Line), m.Error, date, dateRead, dateDelivered,
		isDelivered, isFinished, btoi(m.FromMe), isRead, isSent, itemType, otherHandle, groupTitle, groupAction,
		assocGUID, assocType, assocEmoji, effect,
		chat.Line, threadGUID, threadPart, partCount)
	if err != nil {
		return Row{}, fmt.Errorf("sim: insert message: %w", err)
	}
	rowid, _ := res.LastInsertId()
	if _, err := tx.ExecContext(ctx, `INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (?, ?, ?)`, chat.RowID, rowid, date); err != nil {
		return Row{}, fmt.Errorf("sim: join message: %w", err)
	}
	for _, a := range atts {
		if err := insertAttachment(ctx, tx, rowid, a, m.FromMe, date); err != nil {
			return Row{}, err
		}
	}
	return Row{RowID: rowid, GUID: m.GUID}, nil
}

// accountGUID is a stable stand-in for message.account_guid (the id of the
// iMessage account in Messages' settings).
func accountGUID(line string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(line); i++ {
		h = (h ^ uint32(line[i])) * 16777619
	}
	return fmt.Sprintf("%08X-0000-4000-8000-%012X", h, uint64(h)*2654435761&0xffffffffffff)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func utf16Len(s string) int { return len(utf16.Encode([]rune(s))) }

// bodyText returns the current text of a message row: text, or the decoded
// attributedBody.
func bodyText(ctx context.Context, tx *wtx, guid string) (string, error) {
	var text sql.NullString
	var body []byte
	err := tx.QueryRowContext(ctx, `SELECT text, attributedBody FROM message WHERE guid = ?`, guid).Scan(&text, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%w: %s", ErrNoMessage, guid)
	}
	if err != nil {
		return "", err
	}
	if text.Valid {
		return text.String, nil
	}
	if len(body) == 0 {
		return "", nil
	}
	as, err := typedstream.Decode(body)
	if as != nil {
		return as.Text, nil
	}
	return "", err
}

// deleteOlderTapbacks removes the earlier reactions of one sender on one
// target: Messages keeps only the latest (a change from love to like, or a
// removal, replaces the row).
func deleteOlderTapbacks(ctx context.Context, tx *wtx, assoc string, fromMe bool, handleID int64) error {
	q := `SELECT ROWID FROM message WHERE associated_message_guid = ? AND associated_message_type BETWEEN 2000 AND 3999 AND is_from_me = ?`
	args := []any{assoc, btoi(fromMe)}
	if !fromMe {
		q += ` AND handle_id = ?`
		args = append(args, handleID)
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("sim: find older tapbacks: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `DELETE FROM chat_message_join WHERE message_id = ?`, id); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM message WHERE ROWID = ?`, id); err != nil {
			return err
		}
	}
	return nil
}

var tapbackVerbs = map[string]string{
	"love": "Loved", "like": "Liked", "dislike": "Disliked", "laugh": "Laughed at",
	"emphasize": "Emphasized", "question": "Questioned",
}

// tapbackSummary is the body Messages gives a tapback row, shown by clients
// that do not understand reactions.
func tapbackSummary(tb *Tapback, orig string) string {
	name, removed, _ := effects.Associated(tb.Code)
	quoted := "\u201c" + orig + "\u201d"
	switch {
	case name == "emoji" && removed:
		return "Removed " + tb.Emoji + " from " + quoted
	case name == "emoji":
		return "Reacted " + tb.Emoji + " to " + quoted
	case removed:
		return "Removed a " + name + " from " + quoted
	case tapbackVerbs[name] != "":
		return tapbackVerbs[name] + " " + quoted
	}
	return strings.ToUpper(name[:1]) + name[1:] + " " + quoted
}

// attachmentBody builds the attributedBody of a message with attachments:
// one U+FFFC per file (each its own part, naming the transfer GUID), then
// the text as the last part.
func attachmentBody(text string, atts []Attachment) ([]byte, string, error) {
	var as typedstream.AttributedString
	for i, a := range atts {
		p := i
		as.Runs = append(as.Runs, typedstream.Run{Start: i, Length: 1, Part: &p, AttachmentGUID: a.GUID})
		as.Text += "\uFFFC"
	}
	if text != "" {
		p := len(atts)
		as.Runs = append(as.Runs, typedstream.Run{Start: len(atts), Length: utf16Len(text), Part: &p})
		as.Text += text
	}
	b, err := typedstream.Encode(as)
	if err != nil {
		return nil, "", fmt.Errorf("sim: encode attachment body: %w", err)
	}
	return b, as.Text, nil
}

// insertAttachment writes the attachment row and its join, with the path
// Messages uses (~/Library/Messages/Attachments/xx/NN/<guid>/<name>).
func insertAttachment(ctx context.Context, tx *wtx, msgRowID int64, a Attachment, outgoing bool, date int64) error {
	if a.TransferState == 0 {
		a.TransferState = 5
	}
	if a.Name == "" {
		a.Name = "file"
	}
	if a.MIME == "" {
		a.MIME = "application/octet-stream"
	}
	if a.Size == 0 {
		a.Size = int64(len(a.Data))
	}
	dir := strings.ToLower(a.GUID)
	rel := fmt.Sprintf("%s/%02d/%s/%s", dir[len(dir)-2:], msgRowID%100, a.GUID, a.Name)
	path := attachmentsPrefix + rel
	if a.Filename != "" {
		path = a.Filename
	} else if a.Data != nil {
		data := a.Data
		if a.TransferState != transferFinished {
			data = data[:len(data)/2] // the part received so far
		}
		if err := tx.writeAttachment(rel, data); err != nil {
			return err
		}
	}
	var uti any
	if a.UTI != "" {
		uti = a.UTI
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO attachment (guid, created_date, start_date, filename, uti, mime_type, transfer_state, is_outgoing, transfer_name, total_bytes, is_sticker, original_guid)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		a.GUID, date/1e9, 0, path, uti, a.MIME, a.TransferState, btoi(outgoing), a.Name, a.Size, btoi(a.Sticker), a.GUID)
	if err != nil {
		return fmt.Errorf("sim: insert attachment: %w", err)
	}
	aid, _ := res.LastInsertId()
	if _, err := tx.ExecContext(ctx, `INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?, ?)`, msgRowID, aid); err != nil {
		return fmt.Errorf("sim: join attachment: %w", err)
	}
	return nil
}
