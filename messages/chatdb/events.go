package chatdb

import (
	"errors"
	"log/slog"
	"math/bits"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/pkg/editinfo"
	"github.com/line-agent/line-agent/pkg/typedstream"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// rowKind says what a message row stands for.
type rowKind int

const (
	kindMessage rowKind = iota // a message (text, attachments)
	kindTapback                // a reaction (associated_message_type != 0)
	kindGroup                  // a group or chat action (item_type 1..3)
	kindOther                  // anything else Messages records (FaceTime, ...): no event
)

func classify(itemType, assocType int64) rowKind {
	switch {
	case assocType != 0:
		if _, _, ok := effects.Associated(int(assocType)); ok {
			return kindTapback
		}
		return kindOther
	case itemType == 0:
		return kindMessage
	case itemType >= 1 && itemType <= 3:
		return kindGroup
	}
	return kindOther
}

// state is what the update columns of a message row said when it was last
// turned into events. Comparing it with the row now tells which in-place
// updates happened in between. The zero state is that of a row nobody has
// acted on yet, so a row the cursor does not remember is treated as new.
type state struct {
	Flags     int64 // flagSent | flagDelivered | flagRead
	Error     int64
	Edited    int64 // date_edited
	Retracted int64 // date_retracted
	SumLen    int64 // length of message_summary_info
	Unsent    int64 // bitmask of the parts listed as unsent (parts 0..62)
	// Pending is the bitmask of the row's attachments (in ROWID order,
	// the first 63) whose transfer_state is not finished, so a transfer
	// that completes after the row was read becomes an event.
	Pending int64
}

// transferFinished is chat.db's attachment.transfer_state of a file that
// is whole.
const transferFinished = 5

const (
	flagSent = 1 << iota
	flagDelivered
	flagRead
)

// sameFingerprint compares the cheap columns (everything but Unsent, which
// needs the summary decoded).
func (s state) sameFingerprint(o state) bool {
	return s.Flags == o.Flags && s.Error == o.Error && s.Edited == o.Edited && s.Retracted == o.Retracted && s.SumLen == o.SumLen
}

// fingerprint computes the cheap state from the update columns. Sent and
// delivered only mean something for rows this account sent (Messages marks
// every received row delivered); tapbacks, group actions and other rows have
// no updates worth an event.
func fingerprint(kind rowKind, fromMe, isSent, isDelivered, isRead bool, errCode, edited, retracted, sumLen int64) state {
	if kind != kindMessage {
		return state{}
	}
	var s state
	if fromMe && isSent {
		s.Flags |= flagSent
	}
	if fromMe && isDelivered {
		s.Flags |= flagDelivered
	}
	if isRead {
		s.Flags |= flagRead
	}
	s.Error, s.Edited, s.Retracted, s.SumLen = errCode, edited, retracted, sumLen
	return s
}

// converter turns rows into events.
type converter struct {
	line  string
	home  string
	clock func() time.Time
	log   *slog.Logger
}

// decoded is a row with its body and summary decoded once.
type decoded struct {
	*row
	kind    rowKind
	text    string
	runs    []typedstream.Run
	summary *editinfo.Summary
	state   state
}

func (c *converter) decode(r *row) *decoded {
	d := &decoded{row: r, kind: classify(r.ItemType, r.AssocType)}
	if len(r.Body) > 0 {
		as, err := typedstream.Decode(r.Body)
		if as != nil {
			d.text, d.runs = as.Text, as.Runs
		}
		if err != nil && !errors.Is(err, typedstream.ErrNoText) {
			c.log.Warn("chatdb: undecodable attributedBody", "guid", r.GUID, "rowid", r.RowID, "err", err)
		}
	}
	if r.Text.Valid && r.Text.String != "" && d.text == "" {
		d.text = r.Text.String
	}
	if len(r.Summary) > 0 {
		sum, err := editinfo.Decode(r.Summary)
		if err != nil {
			c.log.Warn("chatdb: undecodable message_summary_info", "guid", r.GUID, "rowid", r.RowID, "err", err)
		} else {
			d.summary = sum
		}
	}
	d.state = fingerprint(d.kind, r.FromMe, r.IsSent, r.IsDelivered, r.IsRead, r.Error, r.DateEdited, r.DateRetracted, int64(len(r.Summary)))
	if d.kind == kindMessage {
		for i, a := range r.Attachments {
			if i < 63 && a.TransferState != transferFinished {
				d.state.Pending |= 1 << i
			}
		}
	}
	if d.kind == kindMessage && d.summary != nil {
		for _, p := range d.summary.Unsent {
			if p >= 0 && p < 63 {
				d.state.Unsent |= 1 << p
			}
		}
	}
	return d
}

// lineOf is the account the row belongs to: destination_caller_id, else the
// row's account, else the chat's, else the configured line.
func (c *converter) lineOf(r *row) string {
	switch {
	case r.DestCallerID != "":
		return r.DestCallerID
	case r.Account != "":
		return lineFromAccount(r.Account)
	case r.ChatLogin != "":
		return lineFromAccount(r.ChatLogin)
	}
	return c.line
}

func (c *converter) ts(v int64) *timestamppb.Timestamp {
	if v == 0 {
		return timestamppb.New(c.clock())
	}
	return timestamppb.New(FromAppleTime(v))
}

// events returns the events for a row whose previous state was prev. isNew
// adds the row's own event (message, tapback or group action) first.
func (c *converter) events(d *decoded, prev state, isNew, historical bool) []*linev1.Event {
	var out []*linev1.Event
	line := c.lineOf(d.row)
	base := func(kind, version string, date int64) *linev1.Event {
		return &linev1.Event{
			Key:         d.GUID + "/" + kind + "/" + version,
			Date:        c.ts(date),
			Line:        line,
			ChatGuid:    d.ChatGUID,
			MessageGuid: d.GUID,
			Historical:  historical,
			RowId:       d.RowID,
		}
	}
	actor := d.Handle
	if d.FromMe {
		actor = line
	}
	if isNew {
		switch d.kind {
		case kindMessage:
			ev := base("message", "0", d.Date)
			ev.Payload = &linev1.Event_Message{Message: c.message(d, line)}
			out = append(out, ev)
		case kindTapback:
			name, removed, _ := effects.Associated(int(d.AssocType))
			tb := &linev1.TapbackEvent{Tapback: name, Emoji: d.AssocEmoji, Removed: removed, Sender: actor, FromMe: d.FromMe}
			if guid, part, err := effects.ParseAssociatedGUID(d.AssocGUID); err == nil {
				tb.TargetMessageGuid, tb.Part = guid, int32(part)
			} else {
				tb.TargetMessageGuid = d.AssocGUID
			}
			ev := base("tapback", "0", d.Date)
			ev.Payload = &linev1.Event_Tapback{Tapback: tb}
			out = append(out, ev)
		case kindGroup:
			if g := groupEvent(d.row, actor); g != nil {
				ev := base("group", "0", d.Date)
				ev.Payload = &linev1.Event_Group{Group: g}
				out = append(out, ev)
			}
		}
	}
	if d.kind != kindMessage {
		return out
	}
	cur := d.state
	rose := func(f int64) bool { return cur.Flags&f != 0 && prev.Flags&f == 0 }
	if rose(flagSent) {
		ev := base("sent", "0", d.Date)
		ev.Payload = &linev1.Event_Sent{Sent: &linev1.SentEvent{}}
		out = append(out, ev)
	}
	if rose(flagDelivered) {
		ev := base("delivered", "0", d.DateDelivered)
		ev.Payload = &linev1.Event_Delivered{Delivered: &linev1.DeliveredEvent{}}
		out = append(out, ev)
	}
	if rose(flagRead) {
		ev := base("read", "0", d.DateRead)
		ev.Payload = &linev1.Event_Read{Read: &linev1.ReadEvent{FromMe: d.FromMe}}
		out = append(out, ev)
	}
	if cur.Error > 0 && cur.Error != prev.Error {
		ev := base("failed", strconv.FormatInt(cur.Error, 10), 0)
		ev.Payload = &linev1.Event_SendFailed{SendFailed: &linev1.SendFailedEvent{Error: int32(cur.Error)}}
		out = append(out, ev)
	}
	if cur.Edited != 0 && cur.Edited != prev.Edited {
		if e := c.edited(d, prev); e != nil {
			ev := base("edited", strconv.FormatInt(cur.Edited, 10), cur.Edited)
			ev.Payload = &linev1.Event_Edited{Edited: e}
			out = append(out, ev)
		}
	}
	if added := cur.Unsent &^ prev.Unsent; added != 0 {
		date := d.DateRetracted
		if date == 0 {
			date = d.DateEdited
		}
		for added != 0 {
			p := bits.TrailingZeros64(uint64(added))
			added &^= 1 << p
			ev := base("unsent", strconv.Itoa(p), date)
			ev.Payload = &linev1.Event_Unsent{Unsent: &linev1.UnsentEvent{Part: int32(p)}}
			out = append(out, ev)
		}
	} else if cur.Retracted != 0 && prev.Retracted == 0 && cur.Unsent == 0 {
		// Retracted without a summary naming the part (damaged or absent
		// message_summary_info): the whole message, part 0.
		ev := base("unsent", "0", d.DateRetracted)
		ev.Payload = &linev1.Event_Unsent{Unsent: &linev1.UnsentEvent{Part: 0}}
		out = append(out, ev)
	}
	// A file that was still transferring when the row was last read and is
	// whole now. Keyed by the attachment, so each is reported once.
	for done := prev.Pending &^ cur.Pending; done != 0; {
		i := bits.TrailingZeros64(uint64(done))
		done &^= 1 << i
		if i >= len(d.Attachments) || d.Attachments[i].TransferState != transferFinished {
			continue // the row lost the attachment, or it failed: nothing to fetch
		}
		a := d.Attachments[i]
		ev := base("attachment", a.GUID, 0)
		ev.Payload = &linev1.Event_AttachmentTransferred{AttachmentTransferred: &linev1.AttachmentTransferredEvent{Attachment: c.attachment(a)}}
		out = append(out, ev)
	}
	return out
}

// message builds the MessageEvent of a row.
func (c *converter) message(d *decoded, line string) *linev1.MessageEvent {
	m := &linev1.MessageEvent{
		Text:    d.text,
		Service: d.Service,
		Sender:  d.Handle,
		FromMe:  d.FromMe,
		Subject: d.Subject,
	}
	if d.FromMe {
		m.Sender = line
	}
	if d.Effect != "" {
		if e, ok := effects.ByID(d.Effect); ok {
			m.Effect = e.Name
		} else {
			m.Effect = d.Effect
		}
	}
	if d.ThreadGUID != "" {
		m.ReplyTo = &linev1.ReplyTo{MessageGuid: d.ThreadGUID, Part: int32(threadPart(d.ThreadPart))}
	}
	for _, r := range d.runs {
		tr := &linev1.TextRun{Start: int32(r.Start), Length: int32(r.Length), AttachmentGuid: r.AttachmentGUID, Mention: r.Mention, Link: r.Link}
		if r.Part != nil {
			tr.Part = int32(*r.Part)
		}
		m.Runs = append(m.Runs, tr)
	}
	for _, a := range d.Attachments {
		m.Attachments = append(m.Attachments, c.attachment(a))
	}
	return m
}

// attachment is an attachment row as events carry it.
func (c *converter) attachment(a attachmentRow) *linev1.Attachment {
	return &linev1.Attachment{
		Guid: a.GUID, Path: c.expand(a.Filename), MimeType: a.MIME, Size: uint64(max(a.Size, 0)),
		TransferState: int32(a.TransferState), FileName: a.TransferName, Sticker: a.Sticker,
	}
}

// expand resolves the "~/Library/..." paths Messages stores.
func (c *converter) expand(p string) string {
	if c.home != "" && (p == "~" || strings.HasPrefix(p, "~/")) {
		return filepath.Join(c.home, p[1:])
	}
	return p
}

// threadPart reads the part index from thread_originator_part
// ("<part>:<start>:<length>").
func threadPart(s string) int {
	head, _, _ := strings.Cut(s, ":")
	n, err := strconv.Atoi(head)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// edited builds the EditedEvent for a changed date_edited, or nil when the
// change was not an edit (an unsend also touches the summary).
func (c *converter) edited(d *decoded, prev state) *linev1.EditedEvent {
	if d.summary == nil || len(d.summary.Parts) == 0 {
		if d.state.Unsent != prev.Unsent {
			return nil
		}
		return &linev1.EditedEvent{Part: 0, Text: d.text}
	}
	part, latest := -1, time.Time{}
	for p, vs := range d.summary.Parts {
		if len(vs) == 0 {
			continue
		}
		if t := vs[len(vs)-1].Date; part < 0 || t.After(latest) || (t.Equal(latest) && p < part) {
			part, latest = p, t
		}
	}
	if part < 0 {
		return nil
	}
	if prev.Edited != 0 && !latest.After(FromAppleTime(prev.Edited)) {
		return nil // no version newer than the last edit we reported
	}
	vs := d.summary.Parts[part]
	e := &linev1.EditedEvent{Part: int32(part), Text: vs[len(vs)-1].Text}
	for _, v := range vs {
		e.History = append(e.History, &linev1.EditVersion{Text: v.Text, Date: timestamppb.New(v.Date)})
	}
	return e
}

// groupEvent maps item_type / group_action_type to a GroupEvent, nil for
// combinations Messages does not document.
func groupEvent(r *row, actor string) *linev1.GroupEvent {
	g := &linev1.GroupEvent{Actor: actor}
	switch {
	case r.ItemType == 1 && r.GroupAction == 0:
		g.Action, g.Handle = linev1.GroupAction_GROUP_ACTION_PARTICIPANT_ADDED, r.OtherHandle
	case r.ItemType == 1 && r.GroupAction == 1:
		g.Action, g.Handle = linev1.GroupAction_GROUP_ACTION_PARTICIPANT_REMOVED, r.OtherHandle
	case r.ItemType == 2:
		g.Action, g.Name = linev1.GroupAction_GROUP_ACTION_RENAMED, r.GroupTitle
	case r.ItemType == 3 && r.GroupAction == 0:
		g.Action, g.Handle = linev1.GroupAction_GROUP_ACTION_PARTICIPANT_LEFT, actor
	case r.ItemType == 3 && r.GroupAction == 1:
		g.Action = linev1.GroupAction_GROUP_ACTION_ICON_SET
	case r.ItemType == 3 && r.GroupAction == 2:
		g.Action = linev1.GroupAction_GROUP_ACTION_ICON_REMOVED
	case r.ItemType == 3 && r.GroupAction == 4:
		g.Action = linev1.GroupAction_GROUP_ACTION_BACKGROUND_SET
	case r.ItemType == 3 && r.GroupAction == 6:
		g.Action = linev1.GroupAction_GROUP_ACTION_BACKGROUND_REMOVED
	default:
		return nil
	}
	return g
}
