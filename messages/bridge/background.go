package bridge

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/icloud"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// DefaultBackgroundTimeout bounds a background command whose context has no
// deadline (the agent always gives one: the command's, 120 s by default).
const DefaultBackgroundTimeout = 120 * time.Second

// BackgroundEvidence is what the Driver reads from chat.db for backgrounds:
// the chat (does it exist, which service) and its background evidence.
// *chatdb.Reader satisfies it.
type BackgroundEvidence interface {
	icloud.Evidence
	LookupChat(ctx context.Context, chatGUID string) (chatdb.ChatState, error)
}

// StagedImage is a background image written where Messages can read it.
type StagedImage struct {
	Path string
	// MimeType is the type of the content (from sniffing), or the declared
	// one when the stager does not sniff.
	MimeType string
}

// ImageStager takes a background image in: bytes or an HTTPS URL, checked
// (JPEG, PNG, HEIC or HEIF by content, agreeing with the declared type,
// within the size cap) and staged. release removes the file and may be
// called more than once. Errors are *command.Error.
type ImageStager interface {
	StageImage(ctx context.Context, a Asset) (StagedImage, func(), error)
}

var _ messages.Resumable = (*Driver)(nil)

// backgroundCapable reports whether a chat can carry a background: an
// iMessage chat (not SMS or RCS) that is not a business chat.
func (d *Driver) backgroundChat(ctx context.Context, chat string) error {
	if bad := nonIMessage(serviceOf(chat)); bad != "" {
		return invalid("chat %s is an %s chat: only iMessage chats have backgrounds", chat, bad)
	}
	if isBusinessChat(chat) {
		return invalid("chat %s is a business chat: business chats cannot have a background", chat)
	}
	cs, err := d.bg.LookupChat(ctx, chat)
	switch {
	case errors.Is(err, chatdb.ErrNotFound):
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "chat %s is not in chat.db", chat)
	case err != nil:
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "reading chat %s from chat.db: %w", chat, err)
	}
	if bad := nonIMessage(cs.Service); bad != "" {
		return invalid("chat %s is an %s chat: only iMessage chats have backgrounds", chat, bad)
	}
	if isBusinessChat(cs.GUID) {
		return invalid("chat %s is a business chat: business chats cannot have a background", chat)
	}
	return nil
}

func nonIMessage(service string) string {
	switch strings.ToUpper(service) {
	case "SMS":
		return "SMS"
	case "RCS":
		return "RCS"
	}
	return ""
}

// isBusinessChat recognises Apple Messages for Business chats, whose
// identifier is a "urn:biz:" URN.
func isBusinessChat(chat string) bool {
	g, err := command.ParseChatGUID(chat)
	return err == nil && strings.HasPrefix(strings.ToLower(g.ID), "urn:biz:")
}

func (d *Driver) needEvidence(c linev1.Capability) error {
	if d.bg == nil {
		return command.Unsupported(c, "no chat.db reader is wired to prove a background's result")
	}
	return nil
}

// stageImage takes the command's image in through Images, or Stager.
func (d *Driver) stageImage(ctx context.Context, sb *linev1.SetBackground) (StagedImage, func(), error) {
	a := Asset{Name: "background", MimeType: sb.GetMimeType(), Data: sb.GetData(), URL: sb.GetUrl()}
	if d.images != nil {
		return d.images.StageImage(ctx, a)
	}
	path, release, err := d.stager.Stage(ctx, a)
	if err != nil {
		return StagedImage{}, nil, err
	}
	mt := a.MimeType
	if mt == "" {
		mt = mime.TypeByExtension(strings.ToLower(path[strings.LastIndexByte(path, '.')+1:]))
	}
	return StagedImage{Path: path, MimeType: mt}, release, nil
}

// setBackground stages the image, starts tracking the asset, asks the helper
// and waits for chat.db to show the asset distributable. The helper's answer
// and its progress are only hints: the evidence decides (docs/backgrounds.md).
func (d *Driver) setBackground(ctx context.Context, cmd *linev1.Command, chat string, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if err := d.needEvidence(linev1.Capability_CAPABILITY_SET_BACKGROUND); err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	if err := d.backgroundChat(ctx, chat); err != nil {
		return nil, err
	}
	img, release, err := d.stageImage(ctx, cmd.GetSetBackground())
	if err != nil {
		return nil, err
	}
	defer release()
	tr, err := icloud.Start(ctx, d.bg, icloud.Spec{ChatGUID: chat}, d.track)
	if err != nil {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "reading chat %s's background from chat.db: %w", chat, err)
	}
	// Journal before asking: after a crash from here on, the upload may be
	// running inside Messages and must be followed, not requested again.
	messages.SaveCheckpoint(ctx, tr.Snapshot())
	report(backgroundUpdate(cmd, tr.State()))

	// The helper call runs beside the wait. Its progress feeds the tracker;
	// a refusal fails it; a request that never reached the helper ends the
	// wait with that error. A timeout or a disconnect after sending decides
	// nothing: Messages may carry on with the upload.
	waitCtx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	callCtx, stopCall := context.WithCancel(ctx)
	callDone := make(chan error, 1)
	go func() {
		asset, err := d.b.SetBackground(callCtx, chat, img.Path, img.MimeType, func(p Progress) {
			tr.Observe(icloud.Progress{Stage: p.Stage, Done: int64(p.Done), Total: int64(p.Total)})
		})
		switch e := command.AsError(err); {
		case err == nil:
			tr.Observe(icloud.Progress{Stage: "uploading", AssetID: asset})
		case e.LastState == StateNotSent:
			stopWait()
		case e.LastState == StateSent:
			// unanswered: the evidence decides
		default:
			tr.Fail(e.Msg)
		}
		callDone <- err
	}()
	defer func() { stopCall(); <-callDone }()

	st, err := tr.Wait(waitCtx, func(s icloud.State) {
		messages.SaveCheckpoint(ctx, tr.Snapshot())
		report(backgroundUpdate(cmd, s))
	})
	if err != nil && ctx.Err() == nil && waitCtx.Err() != nil {
		// The request never reached the helper: nothing is uploading.
		cerr := <-callDone
		callDone <- cerr
		return nil, command.AsError(cerr)
	}
	return backgroundResult(ctx, chat, st, err)
}

// Resume follows a set_background interrupted by an agent restart from the
// checkpoint its Execute saved (the tracker's snapshot), without asking the
// helper again: the upload runs inside Messages, and chat.db decides.
func (d *Driver) Resume(ctx context.Context, cmd *linev1.Command, checkpoint []byte, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if report == nil {
		report = func(*linev1.CommandUpdate) {}
	}
	if _, ok := cmd.GetKind().(*linev1.Command_SetBackground); !ok {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "%s cannot be resumed", command.KindName(cmd))
	}
	if err := d.needEvidence(linev1.Capability_CAPABILITY_SET_BACKGROUND); err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	tr, err := icloud.Resume(d.bg, checkpoint, d.track)
	if err != nil {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "the background's checkpoint cannot be read: %w", err)
	}
	st, err := tr.Wait(ctx, func(s icloud.State) {
		messages.SaveCheckpoint(ctx, tr.Snapshot())
		report(backgroundUpdate(cmd, s))
	})
	return backgroundResult(ctx, tr.ChatGUID(), st, err)
}

func withDefaultDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultBackgroundTimeout)
}

// backgroundResult turns Wait's outcome into the command's: the snapshot
// only for a distributable asset.
func backgroundResult(ctx context.Context, chat string, st icloud.State, err error) (*linev1.Snapshot, error) {
	if err == nil && st.Phase == icloud.Distributable {
		return &linev1.Snapshot{ChatGuid: chat, Service: serviceOf(chat), AssetId: st.AssetID}, nil
	}
	var nd *icloud.NotDistributableError
	if !errors.As(err, &nd) {
		if err == nil {
			err = fmt.Errorf("the tracker ended in %s", st)
		}
		e := command.AsError(err)
		e.LastState = st.String()
		return nil, e
	}
	switch {
	case errors.Is(err, icloud.ErrFailed):
		return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_NOT_DISTRIBUTABLE, LastState: nd.State.String(), Err: err,
			Msg: "the background upload failed: " + nd.State.Reason}
	case errors.Is(err, context.DeadlineExceeded):
		return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_NOT_DISTRIBUTABLE, LastState: nd.State.String(), Err: err,
			Msg: "the background's asset was not distributable before the command's deadline (chat.db: " + nd.State.Evidence + ")"}
	}
	// Cancelled (the agent is stopping): not a verdict on the upload.
	return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, LastState: nd.State.String(), Err: err,
		Msg: "following the background upload was interrupted"}
}

// backgroundUpdate is the CommandUpdate for a tracker state.
func backgroundUpdate(cmd *linev1.Command, s icloud.State) *linev1.CommandUpdate {
	p := &linev1.Progress{Stage: s.Phase.String(), Done: uint64(max(s.Done, 0)), Total: uint64(max(s.Total, 0))}
	switch s.Phase {
	case icloud.Staged:
		p.Stage = "staged"
	case icloud.Uploading:
		p.Stage = "uploading"
	case icloud.Distributable:
		p.Stage = "distributable"
		if p.Total > 0 {
			p.Done = p.Total
		}
	case icloud.Failed:
		p.Stage = "failed"
	}
	return &linev1.CommandUpdate{CommandId: cmd.GetId(), State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS, Detail: s.String(), Progress: p}
}

// clearBackground removes the chat's background and confirms it from
// chat.db: the properties without backgroundProperties. A chat that has
// none already succeeds without asking the helper (idempotent).
func (d *Driver) clearBackground(ctx context.Context, cmd *linev1.Command, chat string, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if err := d.needEvidence(linev1.Capability_CAPABILITY_CLEAR_BACKGROUND); err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	if err := d.backgroundChat(ctx, chat); err != nil {
		return nil, err
	}
	snap := &linev1.Snapshot{ChatGuid: chat, Service: serviceOf(chat)}
	bg, err := d.bg.ChatBackground(ctx, chat)
	if err != nil {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "reading chat %s's background from chat.db: %w", chat, err)
	}
	if !bg.Set {
		return snap, nil
	}
	if err := d.b.ClearBackground(ctx, chat); err != nil {
		return nil, err
	}
	update(report, cmd, "confirming", nil)
	last := "properties still have backgroundProperties"
	poll := d.track.Poll
	if poll <= 0 {
		poll = 50 * time.Millisecond
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		bg, err := d.bg.ChatBackground(ctx, chat)
		switch {
		case err != nil:
			last = "chat.db unreadable: " + err.Error()
		case !bg.Set:
			return snap, nil
		}
		select {
		case <-ctx.Done():
			return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED, LastState: last, Err: ctx.Err(),
				Msg: "chat.db did not show the background removed before the deadline"}
		case <-t.C:
		}
	}
}
