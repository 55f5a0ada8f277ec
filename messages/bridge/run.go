package bridge

import (
	"context"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/confirm"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// run maps a validated command to its helper action and builds the snapshot
// from the answer. confirmed is true when run already asked the Confirmer.
func (d *Driver) run(ctx context.Context, cmd *linev1.Command, p *plan, before confirm.Before, report func(*linev1.CommandUpdate)) (snap *linev1.Snapshot, confirmed bool, err error) {
	chat := p.chat
	snap = &linev1.Snapshot{ChatGuid: chat, Service: serviceOf(chat)}
	sent := func(s Sent, err error) (*linev1.Snapshot, bool, error) {
		if s.ChatGUID != "" {
			snap.ChatGuid, snap.Service = s.ChatGUID, serviceOf(s.ChatGUID)
		}
		snap.MessageGuid = s.MessageGUID
		return snap, false, err
	}
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		st := k.SendText
		if chat == "" {
			return sent(d.b.CreateChat(ctx, CreateChatRequest{Addresses: p.participants, Message: st.GetText(), EffectID: p.effectID, Subject: st.GetSubject()}))
		}
		return sent(d.b.SendText(ctx, SendTextRequest{ChatGUID: chat, Text: st.GetText(), EffectID: p.effectID,
			ReplyTo: st.GetReplyTo().GetMessageGuid(), ReplyPart: int(st.GetReplyTo().GetPart()), Subject: st.GetSubject()}))
	case *linev1.Command_SendAttachment:
		sa := k.SendAttachment
		path, release, err := d.stager.Stage(ctx, Asset{Name: sa.GetFileName(), MimeType: sa.GetMimeType(), Data: sa.GetData(), URL: sa.GetUrl()})
		if err != nil {
			return nil, false, err
		}
		defer release()
		update(report, cmd, "staged", nil)
		return sent(d.b.SendAttachment(ctx, SendAttachmentRequest{ChatGUID: chat, Path: path, EffectID: p.effectID,
			ReplyTo: sa.GetReplyTo().GetMessageGuid(), ReplyPart: int(sa.GetReplyTo().GetPart())}))
	case *linev1.Command_Typing:
		return snap, false, d.b.Typing(ctx, chat, k.Typing.GetOn())
	case *linev1.Command_React:
		r := k.React
		return sent(d.b.React(ctx, ReactRequest{ChatGUID: chat, TargetGUID: r.GetMessageGuid(), Part: int(r.GetPart()), Code: p.code, Emoji: p.emoji}))
	case *linev1.Command_Edit:
		e := k.Edit
		snap.MessageGuid = e.GetMessageGuid()
		return snap, false, d.b.Edit(ctx, EditRequest{ChatGUID: chat, MessageGUID: e.GetMessageGuid(), Part: int(e.GetPart()), Text: e.GetText()})
	case *linev1.Command_Unsend:
		u := k.Unsend
		snap.MessageGuid = u.GetMessageGuid()
		return snap, false, d.b.Unsend(ctx, chat, u.GetMessageGuid(), int(u.GetPart()))
	case *linev1.Command_MarkRead:
		return snap, false, d.b.MarkRead(ctx, chat)
	case *linev1.Command_SetBackground:
		snap, err := d.setBackground(ctx, cmd, chat, report)
		return snap, true, err
	case *linev1.Command_ClearBackground:
		snap, err := d.clearBackground(ctx, cmd, chat, report)
		return snap, true, err
	case *linev1.Command_CreateChat:
		return d.createChat(ctx, cmd, p, before, report)
	case *linev1.Command_RenameGroup:
		return snap, false, d.b.RenameGroup(ctx, chat, k.RenameGroup.GetName())
	case *linev1.Command_LookupHandle:
		ok, err := d.b.LookupHandle(ctx, p.handle)
		return &linev1.Snapshot{Reachable: ok, Service: "iMessage"}, false, err
	}
	// validate and check passed: a kind added to the protocol but not here.
	return nil, false, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "the bridge has no helper action for %s", command.KindName(cmd))
}

// createChat sends the first message, or with none only creates the chat
// (FeatureCreateChatEmpty; UNSUPPORTED before anything is sent when the
// helper lacks it); a named group is then renamed, which
// needs the chat GUID: from the helper's answer, or else from chat.db
// through the Confirmer.
func (d *Driver) createChat(ctx context.Context, cmd *linev1.Command, p *plan, before confirm.Before, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, bool, error) {
	cc := cmd.GetCreateChat()
	s, err := d.b.CreateChat(ctx, CreateChatRequest{Addresses: p.participants, Message: cc.GetFirstMessage()})
	if err != nil {
		return nil, false, err
	}
	snap := &linev1.Snapshot{MessageGuid: s.MessageGUID, ChatGuid: s.ChatGUID, Service: serviceOf(s.ChatGUID)}
	if cc.GetName() == "" || len(p.participants) < 2 {
		return snap, false, nil
	}
	confirmed := false
	if snap.ChatGuid == "" && d.confirm != nil {
		update(report, cmd, "confirming", nil)
		if snap, err = d.confirm.Confirm(ctx, cmd, before, snap, report); err != nil {
			return nil, false, err
		}
		confirmed = true
	}
	if snap.ChatGuid == "" {
		return nil, false, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, LastState: "created_not_named",
			Msg: "the group was created but not named: the helper did not say its chat GUID and no chat.db confirmer is wired"}
	}
	if err := d.b.RenameGroup(ctx, snap.ChatGuid, cc.GetName()); err != nil {
		e := command.AsError(err)
		e.LastState = "created_not_named"
		return nil, false, e
	}
	return snap, confirmed, nil
}
