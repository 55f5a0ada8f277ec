package bridge

import (
	"context"
	"fmt"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/icloud"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/confirm"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Confirmer checks chat.db for what a command did (*confirm.Confirmer).
// The bridge only knows what the helper answered; the agent's promise is
// that success means the row is visible, so the agent gives the driver its
// chat.db confirmer.
type Confirmer interface {
	// Check refuses, before anything is sent, what chat.db already says
	// cannot work (an unknown chat, a missing target message, someone
	// else's message to edit) and returns what it saw, for Confirm.
	Check(ctx context.Context, cmd *linev1.Command) (confirm.Before, error)
	// Confirm waits until chat.db shows the effect of cmd (before is what
	// Check saw; answered holds what the helper said: for sends, the new
	// message's GUID) and returns the snapshot to report, or a typed error
	// (DEADLINE_EXCEEDED with the last state seen). report sends progress
	// and must not block.
	Confirm(ctx context.Context, cmd *linev1.Command, before confirm.Before, answered *linev1.Snapshot, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error)
}

// DriverOptions configure NewDriver.
type DriverOptions struct {
	// Confirm, when set, checks every command against chat.db before it is
	// sent and confirms every one that leaves a trace there (all but typing
	// and look-ups). Nil sends unchecked and returns the snapshot built
	// from the helper's answer.
	Confirm Confirmer
	// Stager stages attachments (and background images when Images is
	// nil). Default: DefaultStager().
	Stager Stager
	// Backgrounds reads the evidence of chat backgrounds from chat.db
	// (*chatdb.Reader satisfies it). Without it set_background and
	// clear_background fail UNSUPPORTED: nothing could prove their result.
	Backgrounds BackgroundEvidence
	// Images takes background images in (the agent's spool: format sniffed,
	// size capped, staged 0600 in a 0700 folder). Nil uses Stager.
	Images ImageStager
	// Tracker tunes the icloud.Tracker following each background upload.
	Tracker icloud.Options
}

// Driver is messages.Driver on top of a Bridge: it validates each command,
// maps it to the helper action, and reports typed errors.
type Driver struct {
	b       *Bridge
	confirm Confirmer
	stager  Stager
	bg      BackgroundEvidence
	images  ImageStager
	track   icloud.Options
}

var (
	_ messages.Driver  = (*Driver)(nil)
	_ messages.Offerer = (*Driver)(nil)
)

// NewDriver returns a Driver using b.
func NewDriver(b *Bridge, opts DriverOptions) *Driver {
	if opts.Stager == nil {
		opts.Stager = DefaultStager()
	}
	return &Driver{b: b, confirm: opts.Confirm, stager: opts.Stager, bg: opts.Backgrounds, images: opts.Images, track: opts.Tracker}
}

// Capabilities is what the connected helper can do right now.
// Backgrounds count only with a chat.db reader to prove them.
func (d *Driver) Capabilities() []linev1.Capability { return d.provable(d.b.Capabilities()) }

// Offered is what the driver offers with its helper connected (see
// Bridge.Offered).
func (d *Driver) Offered() []linev1.Capability { return d.provable(d.b.Offered()) }

// provable drops the background capabilities when nothing can prove them.
func (d *Driver) provable(cs []linev1.Capability) []linev1.Capability {
	if d.bg != nil {
		return cs
	}
	out := cs[:0:0]
	for _, c := range cs {
		if c != linev1.Capability_CAPABILITY_SET_BACKGROUND && c != linev1.Capability_CAPABILITY_CLEAR_BACKGROUND {
			out = append(out, c)
		}
	}
	return out
}

// Execute validates cmd, runs the Confirmer's chat.db checks, fails at
// once without a capable helper, runs the action and, with a Confirmer,
// waits for chat.db to show it.
func (d *Driver) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if report == nil {
		report = func(*linev1.CommandUpdate) {}
	}
	p, err := validate(cmd)
	if err != nil {
		return nil, err
	}
	var before confirm.Before
	if d.confirm != nil {
		if before, err = d.confirm.Check(ctx, cmd); err != nil {
			return nil, command.AsError(err)
		}
	}
	if err := d.check(ctx, p.needs); err != nil {
		return nil, err
	}
	snap, confirmed, err := d.run(ctx, cmd, p, before, report)
	if err != nil {
		ce := command.AsError(err)
		if ce.LastState == StateSent && d.confirm != nil && p.confirm {
			return d.settleUnanswered(ctx, cmd, before, ce, report)
		}
		return nil, ce
	}
	if d.confirm == nil || !p.confirm || confirmed {
		return snap, nil
	}
	update(report, cmd, "confirming", nil)
	snap, err = d.confirm.Confirm(ctx, cmd, before, snap, report)
	if err != nil {
		return nil, command.AsError(err)
	}
	return snap, nil
}

// unansweredLook bounds the look at chat.db for a request the helper had
// but never answered.
const unansweredLook = 5 * time.Second

// settleUnanswered decides a command whose request reached the helper but
// got no answer (the helper went away, or the deadline passed): the helper
// may have acted, so a failure would have the caller send it again. chat.db
// says what happened: the row (or tapback, edit...) is the success it
// shows; a failure Messages recorded is that failure; nothing within
// unansweredLook is IN_DOUBT, never a guess either way.
func (d *Driver) settleUnanswered(ctx context.Context, cmd *linev1.Command, before confirm.Before, ce *command.Error, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	look, cancel := context.WithTimeout(context.WithoutCancel(ctx), unansweredLook)
	defer cancel()
	update(report, cmd, "the helper did not answer; looking in chat.db", nil)
	snap, err := d.confirm.Confirm(look, cmd, before, nil, report)
	switch {
	case err == nil:
		d.b.log.Warn("the helper did not answer, but chat.db shows the command done; confirming", "command", cmd.GetId(), "message_guid", snap.GetMessageGuid())
		return snap, nil
	case look.Err() == nil:
		return nil, command.AsError(err)
	}
	return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_IN_DOUBT,
		Msg:       fmt.Sprintf("%s; chat.db showed no result within %s, and the helper may still act", ce.Msg, unansweredLook),
		LastState: StateSent, Err: ce}
}

// check fails fast: no helper, or one without a capability the command
// needs. It waits for a just-connected helper's handshake (bounded by
// HandshakeTimeout) so a command is not refused during it.
func (d *Driver) check(ctx context.Context, needs []linev1.Capability) error {
	hc, err := d.b.settled(ctx)
	if err != nil {
		return err
	}
	have := capabilitiesOf(hc.actions)
	for _, n := range needs {
		if err := d.needEvidence(n); err != nil && (n == linev1.Capability_CAPABILITY_SET_BACKGROUND || n == linev1.Capability_CAPABILITY_CLEAR_BACKGROUND) {
			return err
		}
		if !hasCapability(have, n) {
			why := "the connected helper does not provide it"
			if !hc.lineAgent {
				why = "the connected BlueBubbles helper does not provide it; a line-agent helper is needed"
			}
			return command.Unsupported(n, why)
		}
	}
	return nil
}

func hasCapability(list []linev1.Capability, c linev1.Capability) bool {
	for _, x := range list {
		if x == c {
			return true
		}
	}
	return false
}

// settled returns the current helper once its handshake is over.
func (b *Bridge) settled(ctx context.Context) (*helperConn, error) {
	hc := b.current()
	if hc == nil {
		return nil, unavailable("no private-API helper is connected (Messages is not running with the helper loaded)", StateNotSent)
	}
	select {
	case <-hc.hsDone:
		return hc, nil
	case <-hc.done:
		return nil, unavailable("the helper disconnected: "+hc.closeReason(), StateNotSent)
	case <-ctx.Done():
		return nil, ctxError(ctx, "the handshake", StateNotSent)
	}
}

func update(report func(*linev1.CommandUpdate), cmd *linev1.Command, detail string, p *linev1.Progress) {
	report(&linev1.CommandUpdate{CommandId: cmd.GetId(), State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS, Detail: detail, Progress: p})
}

// serviceOf is the service part of a chat GUID ("iMessage", "SMS", "any"),
// "" for what is not one.
func serviceOf(chat string) string {
	g, err := command.ParseChatGUID(chat)
	if err != nil {
		return ""
	}
	return g.Service
}
