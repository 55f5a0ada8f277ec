package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/pkg/procid"
	"github.com/line-agent/line-agent/pkg/wallclock"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Reconciler looks in chat.db, once, for what a command interrupted by a
// crash left there; *confirm.Confirmer is one. start is when the command
// was marked running and chat.db's newest row then; claimed names the
// GUIDs other commands own.
type Reconciler interface {
	Reconcile(ctx context.Context, cmd *linev1.Command, start confirm.Start, claimed func(guid string) bool) (confirm.Finding, error)
}

// Defaults of the reconciliation's two times (Config.ReconcileSettle and
// Config.ReconcileWait).
const (
	// defaultSettle is Messages' settling time: how long after whatever
	// handed it a command (an osascript run, a helper transaction) is gone
	// its row may still appear in chat.db.
	defaultSettle = 10 * time.Second
	// defaultWait bounds how long a command stays reconciling past the
	// settling time because its osascript run still lives, before it is
	// settled IN_DOUBT.
	defaultWait = 2 * time.Minute
)

// reconcileLook bounds the first look at start: the agent's start waits
// for it, so whatever is not decided by then is looked at again in the
// background.
const reconcileLook = 10 * time.Second

// reconciler settles the commands an earlier process left running by what
// chat.db shows (docs/reliability.md, "Reconciliation after a crash"):
// found, the command succeeds with the row's snapshot; certainly absent,
// it fails NOT_SENT; undecidable, it is IN_DOUBT with what was seen. Never
// is it run again.
type reconciler struct {
	look    Reconciler
	journal *Journal
	log     *slog.Logger
	settle  time.Duration
	wait    time.Duration
	now     func() time.Time
	alive   func(procid.ID) (bool, error)
	// began is when this process began reconciling: the earlier one, and
	// with it the helper connection of its transactions, was gone by then.
	began time.Time
	// claimed are the message GUIDs recorded results own, and those found
	// for commands reconciled before.
	claimed map[string]bool
	// waiting are the commands left reconciling, for the background.
	waiting []*waitingCommand
}

// waitingCommand is a command that could not be decided yet.
type waitingCommand struct {
	u unfinished
	// goneAt is when the noted osascript child was first seen gone.
	goneAt time.Time
	// seen is the last look's finding, for the IN_DOUBT at the bound.
	seen string
}

func newReconciler(look Reconciler, j *Journal, log *slog.Logger, settle, wait time.Duration) *reconciler {
	if settle <= 0 {
		settle = defaultSettle
	}
	if wait <= 0 {
		wait = defaultWait
	}
	return &reconciler{look: look, journal: j, log: log, settle: settle, wait: wait, now: wallclock.Now, alive: procid.Alive}
}

// first looks once at every interrupted command, before the agent takes
// commands: the clear cases are settled in the journal now (a redelivery
// is answered from it), the others are marked reconciling for background.
// Commands with a checkpoint are not its business (SettleInterrupted
// resumes them).
func (r *reconciler) first(ctx context.Context) error {
	r.began = r.now()
	list, err := r.journal.unfinishedCommands(ctx)
	if err != nil || len(list) == 0 {
		return err
	}
	oldest := list[0]
	for _, u := range list[1:] {
		if u.started.At.Before(oldest.started.At) {
			oldest.started.At = u.started.At
		}
	}
	r.claimed, err = r.journal.claimedFrom(ctx, oldest.order, oldest.started.At.Add(-time.Minute))
	if err != nil {
		return err
	}
	lookCtx, cancel := context.WithTimeout(ctx, reconcileLook)
	defer cancel()
	for _, u := range list {
		w := &waitingCommand{u: u}
		res := r.check(lookCtx, w)
		if res == nil {
			if err := r.journal.markReconciling(u.cmd.GetId()); err != nil {
				return err
			}
			r.log.Info("interrupted command not decidable yet; checking chat.db again in the background, not running it again",
				"command", u.cmd.GetId(), "kind", command.KindName(u.cmd), "seen", w.seen)
			r.waiting = append(r.waiting, w)
			continue
		}
		if err := r.journal.Settle(ctx, res); err != nil {
			return err
		}
		r.logSettled(u.cmd, res)
	}
	return nil
}

// background re-checks the waiting commands, more slowly as time passes,
// until each is decided or runCtx ends (the next start takes them up).
// Each is answered IN_PROGRESS meanwhile, never run again.
func (r *reconciler) background(runCtx context.Context, d *Dispatcher) {
	if len(r.waiting) == 0 {
		return
	}
	for _, w := range r.waiting {
		d.reconciling(w.u.cmd.GetId(), "reconciling with chat.db after an agent restart: "+w.seen)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		pause := 100 * time.Millisecond
		for len(r.waiting) > 0 {
			t := time.NewTimer(pause)
			select {
			case <-runCtx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			pause = min(pause*2, 2*time.Second)
			left := r.waiting[:0]
			for _, w := range r.waiting {
				ctx, cancel := context.WithTimeout(runCtx, reconcileLook)
				res := r.check(ctx, w)
				cancel()
				if runCtx.Err() != nil {
					return
				}
				if res == nil {
					left = append(left, w)
					continue
				}
				d.reconciled(res)
				r.logSettled(w.u.cmd, res)
			}
			r.waiting = left
		}
	}()
}

// check looks once and judges: a result, or nil to look again later.
func (r *reconciler) check(ctx context.Context, w *waitingCommand) *linev1.CommandResult {
	cmd := w.u.cmd
	id := cmd.GetId()
	f, err := r.look.Reconcile(ctx, cmd, w.u.started, func(g string) bool { return r.claimed[g] })
	now := r.now()
	if err != nil {
		return inDoubt(id, now, fmt.Sprintf("chat.db could not be read: %v", err))
	}
	w.seen = f.Seen
	switch f.Verdict {
	case confirm.Found:
		if f.Err != nil {
			return &linev1.CommandResult{CommandId: id, FinishedAt: timestamppb.New(now), Outcome: &linev1.CommandResult_Error{Error: f.Err.Proto()}}
		}
		if g := f.Snapshot.GetMessageGuid(); g != "" {
			r.claimed[g] = true
		}
		return &linev1.CommandResult{CommandId: id, FinishedAt: timestamppb.New(now), Outcome: &linev1.CommandResult_Snapshot{Snapshot: f.Snapshot}}
	case confirm.Ambiguous:
		return inDoubt(id, now, f.Seen)
	case confirm.Traceless, confirm.Absent:
		if harmlessToRepeat(cmd) {
			return notSent(id, now, f.Seen+"; "+command.KindName(cmd)+" is harmless to repeat")
		}
		if f.Verdict == confirm.Traceless {
			return inDoubt(id, now, f.Seen)
		}
	}
	// Absent, or Pending: can it still change?
	if p := w.u.attempt.Process; p != nil {
		alive, err := r.alive(*p)
		switch {
		case err != nil:
			return inDoubt(id, now, fmt.Sprintf("%s; whether its osascript run (pid %d) still runs cannot be told: %v", f.Seen, p.Pid, err))
		case alive:
			w.seen = fmt.Sprintf("%s; its osascript run (pid %d) still runs", f.Seen, p.Pid)
			return r.later(id, now, w)
		case w.goneAt.IsZero():
			w.goneAt = now
		}
	}
	quiet := r.began
	if w.goneAt.After(quiet) {
		quiet = w.goneAt
	}
	if now.Before(quiet.Add(r.settle)) {
		return r.later(id, now, w)
	}
	if f.Verdict == confirm.Pending {
		// Messages has it and did not finish it: whether it ever goes out
		// is Messages' business now, and a resend could double it.
		return inDoubt(id, now, f.Seen+", still so after Messages' settling time ("+r.settle.String()+")")
	}
	return notSent(id, now, fmt.Sprintf("%s, and nothing can still send it: no osascript run or helper transaction of it is left, and Messages' settling time (%s) has passed", f.Seen, r.settle))
}

// later is nil while the command may still be decided, IN_DOUBT with the
// last finding once the wait is over.
func (r *reconciler) later(id string, now time.Time, w *waitingCommand) *linev1.CommandResult {
	if now.Before(r.began.Add(r.settle + r.wait)) {
		return nil
	}
	return inDoubt(id, now, fmt.Sprintf("%s (still undecided %s after the restart)", w.seen, now.Sub(r.began).Round(time.Second)))
}

func (r *reconciler) logSettled(cmd *linev1.Command, res *linev1.CommandResult) {
	if s := res.GetSnapshot(); s != nil {
		r.log.Info("interrupted command reconciled: chat.db shows it done", "command", cmd.GetId(), "kind", command.KindName(cmd), "message_guid", s.GetMessageGuid())
		return
	}
	r.log.Warn("interrupted command reconciled: not run again", "command", cmd.GetId(), "kind", command.KindName(cmd),
		"code", command.CodeName(res.GetError().GetCode()), "seen", res.GetError().GetLastState())
}

// harmlessToRepeat names the kinds whose repetition cannot double
// anything a person sees: a typing indicator, read marks, an availability
// look-up, a file fetched for a caller. Interrupted and not confirmed,
// they fail NOT_SENT at once, without waiting for the settling time.
func harmlessToRepeat(cmd *linev1.Command) bool {
	switch cmd.GetKind().(type) {
	case *linev1.Command_Typing, *linev1.Command_MarkRead, *linev1.Command_LookupHandle, *linev1.Command_FetchAttachment:
		return true
	}
	return false
}

func inDoubt(id string, now time.Time, seen string) *linev1.CommandResult {
	return failed(id, now, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_IN_DOUBT, LastState: seen,
		Msg: "the agent stopped while this command ran, and after the restart chat.db cannot tell whether it reached Messages (" + seen + "); it was not run again"})
}

func notSent(id string, now time.Time, seen string) *linev1.CommandResult {
	return failed(id, now, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_NOT_SENT, LastState: seen,
		Msg: "the agent stopped while this command ran, and after the restart it certainly had no effect (" + seen + "); it was not run again: submitting it again under a new id is safe"})
}

func failed(id string, now time.Time, e *command.Error) *linev1.CommandResult {
	return &linev1.CommandResult{CommandId: id, FinishedAt: timestamppb.New(now), Outcome: &linev1.CommandResult_Error{Error: e.Proto()}}
}
