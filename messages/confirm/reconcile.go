package confirm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Verdict is what one look at chat.db says about a command a crash
// interrupted (docs/reliability.md, "Reconciliation after a crash").
type Verdict int

const (
	// Absent: no trace of the command in its window. Whether it can still
	// appear is the caller's judgement (a child still running, Messages'
	// settling time).
	Absent Verdict = iota + 1
	// Found: the command's trace. Finding.Snapshot is the result the
	// driver would have returned, or Finding.Err the failure Messages
	// recorded on the row.
	Found
	// Pending: a trace that is not final yet (the row written, not sent;
	// an edit to other text): look again.
	Pending
	// Ambiguous: more than one trace could be the command's, or the
	// window could not be read whole.
	Ambiguous
	// Traceless: the command leaves nothing chat.db can show (typing, a
	// look-up, a fetch), or its target cannot be named (a group a send to
	// several people would have created).
	Traceless
)

// Finding is one look's answer.
type Finding struct {
	Verdict  Verdict
	Snapshot *linev1.Snapshot
	Err      *command.Error
	// Seen is what was seen, in words: the log line, and the message of an
	// IN_DOUBT or NOT_SENT result. It names rows by GUID, never by text.
	Seen string
}

// reconcileMargin widens a window before the command's start: Messages
// dates a row with its own reading of the clock, a moment before or after
// the agent's.
const reconcileMargin = 2 * time.Second

// Start is where an interrupted command began, as the journal recorded it
// before the driver ran.
type Start struct {
	// At is the agent's wall clock then.
	At time.Time
	// Mark is chat.db's newest message ROWID then (chatdb.Reader.NewestRowID),
	// when Marked (a journal from before marks has none). Every row the
	// command wrote lies above it, whatever the clocks did since; without
	// it the window is the wall clock's, which a clock set back defeats.
	Mark   int64
	Marked bool
}

// Reconcile looks once in chat.db for what cmd left there, started at
// start and interrupted by a crash. The rules are Confirm's: an outgoing
// row in the chat with the text, the tapback row by target and code, the
// edit, the retraction, the read marks, the group's name. A new row counts
// when it lies above start.Mark and is dated from start.At (less a small
// margin); one above the mark but dated before is neither the command's
// for certain (a row synced late from iCloud keeps its old date) nor
// certainly not (the clock was set back), so it makes the command
// Ambiguous, never Absent. claimed reports the GUIDs other commands already
// own (their recorded results), which are never taken for cmd's; nil
// claims none. The error is chat.db's (unreadable, closed).
func (c *Confirmer) Reconcile(ctx context.Context, cmd *linev1.Command, start Start, claimed func(guid string) bool) (Finding, error) {
	w := chatdb.Window{After: start.Mark, Marked: start.Marked, Since: start.At.Add(-reconcileMargin)}
	since := w.Since
	if claimed == nil {
		claimed = func(string) bool { return false }
	}
	if w.Marked {
		newest, err := c.r.NewestRowID(ctx)
		if err != nil {
			return Finding{}, err
		}
		if newest < w.After {
			return Finding{Verdict: Ambiguous, Seen: fmt.Sprintf("chat.db's newest row is %d, below the %d it had when the command started: chat.db was replaced or restored since", newest, w.After)}, nil
		}
	}
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		return c.reconcileSend(ctx, cmd, k.SendText.GetText(), w, claimed)
	case *linev1.Command_SendAttachment:
		return c.reconcileSend(ctx, cmd, "\uFFFC", w, claimed)
	case *linev1.Command_CreateChat:
		cc := k.CreateChat
		if cc.GetFirstMessage() == "" || len(cc.GetParticipants()) != 1 {
			return traceless("a new chat without a first message, or a new group, cannot be told from one made otherwise"), nil
		}
		return c.reconcileSend(ctx, cmd, cc.GetFirstMessage(), w, claimed)
	case *linev1.Command_React:
		r := k.React
		code, err := effects.ReactionCode(r.GetTapback(), r.GetEmoji() != "", r.GetRemove())
		if err != nil {
			return traceless(fmt.Sprintf("not a tapback chat.db records: %v", err)), nil
		}
		st, err := c.r.FindTapback(ctx, r.GetMessageGuid(), int(r.GetPart()), code)
		switch {
		case errors.Is(err, chatdb.ErrNotFound):
			return absent("no tapback row of type %d on %s from this account", code, r.GetMessageGuid()), nil
		case err != nil:
			return Finding{}, err
		case w.Marked && st.RowID <= w.After:
			return absent("the newest tapback row of type %d on %s (%s) was there before the command", code, r.GetMessageGuid(), st.GUID), nil
		case !w.Marked && st.Date.Before(since):
			return absent("the newest tapback row of type %d on %s is from %s, before the command", code, r.GetMessageGuid(), stamp(st.Date)), nil
		case claimed(st.GUID):
			return absent("the tapback row %s is another command's", st.GUID), nil
		case st.Date.Before(since):
			return Finding{Verdict: Ambiguous, Seen: lateRow(st, since)}, nil
		}
		return found(snapshotOf(st), "tapback row %s", st.GUID), nil
	case *linev1.Command_Edit:
		e := k.Edit
		st, err := c.r.LookupMessage(ctx, e.GetMessageGuid())
		switch {
		case errors.Is(err, chatdb.ErrNotFound):
			return absent("no message %s", e.GetMessageGuid()), nil
		case err != nil:
			return Finding{}, err
		case st.DateEdited.IsZero():
			return absent("message %s never edited", st.GUID), nil
		case st.DateEdited.Before(since) && e.GetPart() == 0 && strings.TrimSpace(st.Text) == strings.TrimSpace(e.GetText()):
			// An edit updates the row in place, so no ROWID tells when it
			// happened: only its date, which a clock set back moves.
			return Finding{Verdict: Ambiguous, Seen: fmt.Sprintf("message %s has the command's text, edited at %s, before the command started: an earlier identical edit, or the clock was set back", st.GUID, stamp(st.DateEdited))}, nil
		case st.DateEdited.Before(since):
			return absent("message %s not edited since the command started", st.GUID), nil
		case e.GetPart() == 0 && strings.TrimSpace(st.Text) != strings.TrimSpace(e.GetText()):
			return Finding{Verdict: Pending, Seen: fmt.Sprintf("message %s edited at %s, to other text", st.GUID, stamp(st.DateEdited))}, nil
		}
		return found(snapshotOf(st), "message %s edited at %s", st.GUID, stamp(st.DateEdited)), nil
	case *linev1.Command_Unsend:
		st, err := c.r.LookupMessage(ctx, k.Unsend.GetMessageGuid())
		switch {
		case errors.Is(err, chatdb.ErrNotFound):
			return absent("no message %s", k.Unsend.GetMessageGuid()), nil
		case err != nil:
			return Finding{}, err
		case st.DateRetracted.IsZero():
			return absent("message %s not retracted", st.GUID), nil
		case st.DateRetracted.Before(since):
			return Finding{Verdict: Ambiguous, Seen: fmt.Sprintf("message %s was retracted at %s, before the command started", st.GUID, stamp(st.DateRetracted))}, nil
		}
		return found(snapshotOf(st), "message %s retracted at %s", st.GUID, stamp(st.DateRetracted)), nil
	case *linev1.Command_MarkRead:
		cs, err := c.r.LookupChat(ctx, cmd.GetChatGuid())
		if errors.Is(err, chatdb.ErrNotFound) {
			return absent("no chat %s", cmd.GetChatGuid()), nil
		} else if err != nil {
			return Finding{}, err
		}
		n, err := c.r.UnreadIncoming(ctx, cmd.GetChatGuid())
		if err != nil {
			return Finding{}, err
		}
		if n > 0 {
			return absent("%d incoming messages unread in %s", n, cs.GUID), nil
		}
		return found(chatSnapshot(cs, c.opts.Now()), "every incoming message of %s read", cs.GUID), nil
	case *linev1.Command_RenameGroup:
		cs, err := c.r.LookupChat(ctx, cmd.GetChatGuid())
		if errors.Is(err, chatdb.ErrNotFound) {
			return absent("no chat %s", cmd.GetChatGuid()), nil
		} else if err != nil {
			return Finding{}, err
		}
		if cs.DisplayName != k.RenameGroup.GetName() {
			return absent("chat %s has another name", cs.GUID), nil
		}
		return found(chatSnapshot(cs, c.opts.Now()), "chat %s has the name", cs.GUID), nil
	}
	return traceless(command.KindName(cmd) + " leaves nothing in chat.db to check"), nil
}

// reconcileSend finds the outgoing rows with text in the command's chat in
// its window: exactly one, unclaimed and dated from the start, is the
// command's.
func (c *Confirmer) reconcileSend(ctx context.Context, cmd *linev1.Command, text string, w chatdb.Window, claimed func(string) bool) (Finding, error) {
	chat, ok := sendChat(cmd)
	if !ok {
		return traceless("a send to several people without a chat GUID goes to a group chat.db cannot name in advance"), nil
	}
	rows, complete, err := c.r.OutgoingIn(ctx, chat, text, w)
	if errors.Is(err, chatdb.ErrNotFound) {
		return absent("no chat %s", chat), nil
	}
	if err != nil {
		return Finding{}, err
	}
	var mine, late []chatdb.MessageState
	for _, st := range rows {
		switch {
		case claimed(st.GUID):
		case st.Date.Before(w.Since):
			late = append(late, st)
		default:
			mine = append(mine, st)
		}
	}
	switch {
	case len(mine) > 1:
		guids := make([]string, 0, 4)
		for i, st := range mine {
			if i == 4 {
				guids = append(guids, "...")
				break
			}
			guids = append(guids, st.GUID)
		}
		return Finding{Verdict: Ambiguous, Seen: fmt.Sprintf("%d outgoing rows in %s with the command's text %s, none another command's (%s): which one is this command's cannot be told",
			len(mine), chat, w, strings.Join(guids, ", "))}, nil
	case len(late) > 0:
		return Finding{Verdict: Ambiguous, Seen: lateRow(late[0], w.Since)}, nil
	case len(mine) == 0 && !complete:
		return Finding{Verdict: Ambiguous, Seen: fmt.Sprintf("more outgoing rows in %s %s than one look reads; none of those read has the command's text", chat, w)}, nil
	case len(mine) == 0:
		return absent("no outgoing row in %s with the command's text %s", chat, w), nil
	}
	st := mine[0]
	snap, state, failed := sendOutcome(st)
	switch {
	case failed != nil:
		return Finding{Verdict: Found, Err: failed, Seen: fmt.Sprintf("row %s in %s: %s", st.GUID, st.ChatGUID, state)}, nil
	case snap != nil:
		return found(snap, "row %s in %s, sent", st.GUID, st.ChatGUID), nil
	}
	return Finding{Verdict: Pending, Seen: fmt.Sprintf("row %s in %s: %s", st.GUID, st.ChatGUID, state)}, nil
}

// lateRow says why a row written after the command started but dated
// before it decides nothing.
func lateRow(st chatdb.MessageState, since time.Time) string {
	return fmt.Sprintf("row %s was written after the command started (chat.db's order) but is dated %s, before its start %s: the clock was set back, or the row came late from iCloud with its old date; whether it is this command's cannot be told",
		st.GUID, stamp(st.Date), stamp(since.Add(reconcileMargin)))
}

// sendChat is the chat a send's row lands in: its chat GUID, or the
// one-to-one chat of its one participant (any service spelling matches).
func sendChat(cmd *linev1.Command) (string, bool) {
	if g := cmd.GetChatGuid(); g != "" {
		return g, true
	}
	hs := cmd.GetParticipants().GetHandles()
	if cc := cmd.GetCreateChat(); cc != nil {
		hs = cc.GetParticipants()
	}
	if len(hs) != 1 {
		return "", false
	}
	h, err := command.NormalizeHandle(hs[0])
	if err != nil {
		return "", false
	}
	return command.ChatGUID{Service: "iMessage", ID: h}.String(), true
}

func found(s *linev1.Snapshot, format string, args ...any) Finding {
	return Finding{Verdict: Found, Snapshot: s, Seen: fmt.Sprintf(format, args...)}
}

func absent(format string, args ...any) Finding {
	return Finding{Verdict: Absent, Seen: fmt.Sprintf(format, args...)}
}

func traceless(why string) Finding { return Finding{Verdict: Traceless, Seen: why} }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
