package agent

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/logging"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/pkg/wallclock"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Dispatcher runs commands: in order within a chat, concurrently across chats
// up to a bound. Submit never waits on Messages, so the stream reader keeps
// reading heartbeats and acks while a send is slow.
type Dispatcher struct {
	driver  messages.Driver
	journal *Journal
	// quotas counts sends before they run; nil keeps no quotas.
	quotas  *Quotas
	emit    func(*linev1.AgentFrame)
	log     *slog.Logger
	lines   map[string]bool
	resolve func(context.Context, *linev1.Command) (*linev1.Command, error)
	// runCtx is cancelled on a hard stop; commands it interrupts stay
	// "running" in the journal and are settled as IN_DOUBT at the next start.
	runCtx    context.Context
	sem       chan struct{}
	maxQueued int
	now       func() time.Time

	mu sync.Mutex
	// queues holds waiting commands per chat key; guarded by mu.
	queues map[string][]*task
	// queued counts commands in queues and running; guarded by mu.
	queued int
	// progress is the latest update of each running command, for answering a
	// redelivered id; guarded by mu.
	progress map[string]*linev1.CommandUpdate
	// finishing holds results sent but not yet durable in the journal;
	// guarded by mu.
	finishing map[string]*linev1.CommandResult
	// draining refuses new commands; guarded by mu.
	draining bool
	// idle is closed when nothing is queued or running during a drain;
	// guarded by mu.
	idle chan struct{}
	// reads runs the read commands, apart from the write path (reads.go).
	reads reads
	// marker reads chat.db's newest row for each start; nil records none.
	marker Marker
	// observer hears each final result once (dispatch_observe.go); nil
	// hears nothing. submitted holds the submissions awaiting their first
	// result, kept only with an observer; guarded by mu.
	observer  CommandObserver
	submitted map[string]submission

	wg sync.WaitGroup
}

// DispatcherOptions configures a Dispatcher.
type DispatcherOptions struct {
	Driver  messages.Driver
	Journal *Journal
	// Quotas, when set, refuses a send beyond the quotas with
	// QUOTA_EXCEEDED before it reaches the driver (quota.go).
	Quotas *Quotas
	// Emit sends a frame to the relay if a stream is up. It may block while
	// the stream is backed up but must return when the stream goes away.
	Emit func(*linev1.AgentFrame)
	// Resolve, when set, turns a command's BlobRef into bytes just before
	// it runs (the relay keeps large file data out of the stream); its
	// error fails that command alone.
	Resolve func(context.Context, *linev1.Command) (*linev1.Command, error)
	// Lines served; a command for any other line is MISROUTED.
	Lines []string
	// ChatDB answers the read commands; nil refuses them as UNSUPPORTED.
	ChatDB ChatReader
	// Marker, when set, reads chat.db's newest row as each command starts,
	// recorded with the start so that a crash is reconciled by chat.db's
	// order rather than the wall clock (docs/reliability.md).
	Marker Marker
	// MaxChats bounds chats running at once; MaxQueued bounds waiting commands.
	MaxChats, MaxQueued int
	Logger              *slog.Logger
	// Observer, when set, hears each command's final result once
	// (metrics); nil hears nothing.
	Observer CommandObserver
}

// Marker tells where chat.db stands: its newest message ROWID.
// *chatdb.Reader is one.
type Marker interface {
	NewestRowID(ctx context.Context) (int64, error)
}

// NewDispatcher returns a dispatcher whose commands run under runCtx.
func NewDispatcher(runCtx context.Context, o DispatcherOptions) *Dispatcher {
	if o.MaxChats <= 0 {
		o.MaxChats = 16
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 1024
	}
	d := &Dispatcher{
		driver: o.Driver, journal: o.Journal, quotas: o.Quotas, resolve: o.Resolve, emit: o.Emit, log: o.Logger, runCtx: runCtx,
		sem: make(chan struct{}, o.MaxChats), maxQueued: o.MaxQueued, now: wallclock.Now,
		lines: map[string]bool{}, queues: map[string][]*task{}, progress: map[string]*linev1.CommandUpdate{}, finishing: map[string]*linev1.CommandResult{},
		reads: newReads(o.ChatDB), marker: o.Marker, observer: o.Observer, submitted: map[string]submission{},
	}
	for _, l := range o.Lines {
		d.lines[command.NormalizeLine(l)] = true
	}
	return d
}

// Submit takes a command from the relay. It answers at once for an id it
// knows (in memory or in the journal), rejects what cannot run, or queues the
// command behind earlier commands for the same chat. It does not wait for the
// journal's write: the chat's runner records the command before running it,
// so records for different chats are committed together.
func (d *Dispatcher) Submit(ctx context.Context, cmd *linev1.Command) {
	id := cmd.GetId()
	if id == "" {
		d.log.Warn("command without id dropped: it cannot be answered")
		return
	}
	if command.IsRead(cmd) {
		// Never journaled: a read may simply run again (reads.go).
		d.submitRead(cmd)
		return
	}
	d.mu.Lock()
	up, known := d.progress[id]
	done := d.finishing[id]
	draining, full := d.draining, d.queued >= d.maxQueued
	d.mu.Unlock()
	if done != nil {
		d.emitResult(done)
		return
	}
	if known {
		d.emit(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Update{Update: up}})
		return
	}
	if rec, err := d.journal.Lookup(ctx, id); err != nil {
		// Not run and not recorded: say why at once, rather than let the
		// relay wait for a deadline.
		d.log.Error("journal lookup failed; command not run", "command", id, "err", err)
		d.emitResult(d.failure(id, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "the agent could not look the command up in its journal: %v", err)))
		return
	} else if rec != nil {
		d.answerRepeat(rec, cmd)
		return
	}
	if draining {
		// Not recorded: the relay hands it over again on the next stream.
		d.log.Info("draining: command left for the next connection", "command", id)
		return
	}
	d.noteSubmit(cmd) // every path from here gives it a result
	if full {
		d.emitResult(d.failure(id, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "agent busy: %d commands already queued", d.maxQueued)))
		return
	}
	if err := d.check(cmd); err != nil {
		res := d.failure(id, err)
		if err := d.journal.Record(ctx, cmd, res); err != nil {
			d.log.Error("journal record failed", "command", id, "err", err)
		}
		d.emitResult(res)
		return
	}
	d.enqueue(&task{cmd: cmd, fresh: true}, &linev1.CommandUpdate{CommandId: id, State: linev1.CommandState_COMMAND_STATE_ACCEPTED})
}

// task is a queued command; a resumed one carries the checkpoint an earlier
// process saved.
type task struct {
	cmd        *linev1.Command
	checkpoint []byte
	// fresh is a command not yet recorded in the journal; guarded by the
	// dispatcher's mu while queued.
	fresh bool
	// skip is set when recording showed the command is not ours to run (the
	// journal already knew the id, or could not write).
	skip bool
	// running is set when the command was recorded running already (the
	// head of a batch recorded by the runner about to run it).
	running bool
}

func (d *Dispatcher) enqueue(t *task, up *linev1.CommandUpdate) {
	d.mu.Lock()
	d.progress[t.cmd.GetId()] = up
	key := chatKey(t.cmd)
	q, busy := d.queues[key]
	d.queues[key] = append(q, t)
	d.queued++
	d.mu.Unlock()
	if !busy {
		d.wg.Add(1)
		go d.runChat(key)
	}
}

// Resume picks up a command an earlier process left running with a
// checkpoint (a background upload in flight): the driver continues from the
// checkpoint instead of starting over, and the result is recorded as usual.
func (d *Dispatcher) Resume(cmd *linev1.Command, checkpoint []byte) {
	d.log.Info("resuming a command interrupted by the last stop", "command", cmd.GetId(), "kind", command.KindName(cmd))
	d.noteSubmit(cmd)
	d.enqueue(&task{cmd: cmd, checkpoint: checkpoint}, &linev1.CommandUpdate{CommandId: cmd.GetId(), State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS, Detail: "resumed after an agent restart"})
}

// check rejects what must not run: unknown kind, another line, a missing
// capability, a deadline already past.
func (d *Dispatcher) check(cmd *linev1.Command) *command.Error {
	// The relay checks this too, but a command may come from a relay that
	// does not: the same judgement, at this door.
	if err := command.Check(cmd, d.now()); err != nil {
		return err
	}
	if !d.lines[command.NormalizeLine(cmd.GetLine())] {
		served := make([]string, 0, len(d.lines))
		for l := range d.lines {
			served = append(served, l)
		}
		slices.Sort(served)
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_MISROUTED, "line %q is not served by this agent (it serves %s)", cmd.GetLine(), strings.Join(served, ", "))
	}
	caps := d.driver.Capabilities()
	for _, need := range command.Needs(cmd) {
		if slices.Contains(caps, need) {
			continue
		}
		if slices.Contains(messages.Offered(d.driver), need) {
			// Its helper is away for a moment (reconnecting): the driver
			// waits for it or answers HELPER_UNAVAILABLE, nothing sent.
			continue
		}
		return command.Unsupported(need, "this Mac's Messages driver does not offer it now")
	}
	if dl := cmd.GetDeadline(); dl != nil && !dl.AsTime().After(d.now()) {
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED, "the deadline %s had passed when the command arrived", dl.AsTime().Format(time.RFC3339))
	}
	return nil
}

// answerRepeat answers cmd, whose id the journal knows: from the record
// when it is the recorded command again, refused without running when it
// is another command with a used id (CommandRecord.ReusedBy).
func (d *Dispatcher) answerRepeat(rec *CommandRecord, cmd *linev1.Command) {
	if rec.ReusedBy(cmd) {
		d.log.Warn("command refused: its id names an earlier command", "command", cmd.GetId())
		d.emitResult(d.failure(cmd.GetId(), command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT,
			"the command's id was used by an earlier command this Mac ran; give each command an id of its own")))
		return
	}
	d.answerFromRecord(rec)
}

func (d *Dispatcher) answerFromRecord(rec *CommandRecord) {
	if rec.Result != nil {
		d.emitResult(rec.Result)
		return
	}
	d.mu.Lock()
	up := d.progress[rec.ID]
	d.mu.Unlock()
	if up == nil {
		state := linev1.CommandState_COMMAND_STATE_IN_PROGRESS
		if rec.State == stateAccepted {
			state = linev1.CommandState_COMMAND_STATE_ACCEPTED
		}
		up = &linev1.CommandUpdate{CommandId: rec.ID, State: state}
	}
	d.emit(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Update{Update: up}})
}

// runChat runs one chat's queue to empty.
func (d *Dispatcher) runChat(key string) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		q := d.queues[key]
		if len(q) == 0 {
			delete(d.queues, key)
			d.mu.Unlock()
			return
		}
		t := q[0]
		cmd := t.cmd
		var batch []*task
		if t.fresh {
			// Record this command and every fresh one queued behind it in one
			// journal write.
			for _, u := range q {
				if u.fresh {
					u.fresh = false
					batch = append(batch, u)
				}
			}
		}
		d.mu.Unlock()

		// When a slot is free right now, the head is recorded running in the
		// batch's one write (it runs next, so a crash may leave it truly in
		// doubt) and its own Start write is saved. Otherwise the batch is
		// recorded accepted and the head waits for a slot, as the others do.
		slot := false
		if d.runCtx.Err() == nil {
			select {
			case d.sem <- struct{}{}:
				slot = true
			default:
			}
		}
		if batch != nil {
			ref, _ := blobOf(t.cmd) // fetching file data is not a side effect: Start after it
			d.record(batch, slot && t.checkpoint == nil && ref == nil)
		}
		if !slot && !t.skip && d.runCtx.Err() == nil {
			select {
			case d.sem <- struct{}{}:
				slot = true
			case <-d.runCtx.Done():
			}
		}

		started, recorded := false, !t.skip
		if recorded && slot {
			started = d.run(t)
		}
		if slot {
			<-d.sem
		}
		if recorded && !started && t.checkpoint == nil {
			// Never reached Messages: let the relay's redelivery run it.
			if err := d.journal.Forget(context.WithoutCancel(d.runCtx), cmd.GetId()); err != nil {
				d.log.Error("journal forget failed", "command", cmd.GetId(), "err", err)
			}
		}

		d.mu.Lock()
		d.queues[key] = d.queues[key][1:]
		delete(d.progress, cmd.GetId())
		delete(d.submitted, cmd.GetId()) // cut short by a hard stop: no result
		d.leftLocked()
		d.mu.Unlock()
	}
}

// leftLocked counts one queued or running command gone, and ends a drain
// waiting for the last. The caller holds mu.
func (d *Dispatcher) leftLocked() {
	d.queued--
	if d.draining && d.queued == 0 && d.idle != nil {
		close(d.idle)
		d.idle = nil
	}
}

// chatDBMark is chat.db's newest row for the start of command id, -1 when
// it cannot be read: that start is then reconciled by the wall clock alone.
func (d *Dispatcher) chatDBMark(id string) int64 {
	if d.marker == nil {
		return -1
	}
	mark, err := d.marker.NewestRowID(d.runCtx)
	if err != nil {
		d.log.Warn("chat.db's newest row could not be read; a crash during this command is reconciled by the wall clock", "command", id, "err", err)
		return -1
	}
	return mark
}

// record writes fresh commands to the journal as accepted before they run
// (at most once) and tells the relay they were accepted. A command the
// journal already knew is answered from its record and marked skip; so is
// every command of a write that failed, answered UNAVAILABLE: it did not run
// and is not recorded, so a redelivery may run it.
//
// With startHead, batch[0] is recorded running (see Journal.BeginMany) and
// run skips its Start write.
func (d *Dispatcher) record(batch []*task, startHead bool) {
	cmds := make([]*linev1.Command, len(batch))
	for i, t := range batch {
		cmds[i] = t.cmd
	}
	mark := int64(-1)
	if startHead {
		mark = d.chatDBMark(batch[0].cmd.GetId())
	}
	failpoint("before-record")
	recs, err := d.journal.BeginMany(context.WithoutCancel(d.runCtx), cmds, startHead, mark)
	if err == nil && startHead && recs[0] == nil {
		batch[0].running = true
	}
	for i, t := range batch {
		switch {
		case err != nil:
			d.log.Error("journal begin failed; command not run", "command", t.cmd.GetId(), "err", err)
			d.emitResult(d.unrecorded(t.cmd.GetId(), err))
			t.skip = true
		case recs[i] != nil:
			d.answerRepeat(recs[i], t.cmd)
			t.skip = true
		default:
			d.mu.Lock()
			up := d.progress[t.cmd.GetId()]
			d.mu.Unlock()
			d.emit(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Update{Update: up}})
		}
	}
}

// unrecorded is the answer to a command the journal could not record: it
// was not run.
func (d *Dispatcher) unrecorded(id string, err error) *linev1.CommandResult {
	return d.failure(id, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "the agent could not record the command: %v", err))
}

// run executes one command and reports whether it reached the driver.
func (d *Dispatcher) run(t *task) (started bool) {
	driverCalled := false
	cmd := t.cmd
	id := cmd.GetId()
	if d.runCtx.Err() != nil {
		return false
	}
	failpoint("after-record")
	deadline := d.now().Add(command.DefaultTimeout)
	if dl := cmd.GetDeadline(); dl != nil {
		deadline = dl.AsTime()
	}
	ctx, cancel := context.WithDeadline(d.runCtx, deadline)
	defer cancel()
	report := func(up *linev1.CommandUpdate) {
		up.CommandId = id
		d.mu.Lock()
		d.progress[id] = up
		d.mu.Unlock()
		d.emit(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Update{Update: up}})
	}
	ctx = messages.WithCheckpointer(ctx, func(b []byte) {
		if err := d.journal.SaveCheckpoint(id, b); err != nil {
			d.log.Error("journal checkpoint failed", "command", id, "err", err)
		}
	})
	ctx = messages.WithAttemptNoter(ctx, func(a messages.Attempt) error { return d.journal.NoteAttempt(id, a) })
	// The driver's and the confirmer's log lines about it name it.
	ctx = logging.WithCommand(ctx, id)
	if d.quotas != nil && t.checkpoint == nil {
		// Counted before anything is fetched or sent; a resumed command
		// was counted when it first ran.
		if qerr := d.quotas.Reserve(ctx, cmd); errQuotaRefused(qerr) {
			d.log.Info("command refused: quota exceeded", "command", id, "err", qerr)
			d.finish(id, d.failure(id, qerr))
			return true
		} else if qerr != nil {
			d.log.Error("quota count failed; command not run", "command", id, "err", qerr)
			d.emitResult(d.failure(id, qerr))
			return false
		}
		defer func() {
			if !driverCalled {
				if err := d.quotas.Release(id); err != nil {
					d.log.Error("quota release failed", "command", id, "err", err)
				}
			}
		}()
	}
	if d.resolve != nil {
		// Fetch file data the relay kept out of the stream. Not a side
		// effect: a stop during the fetch leaves the command unstarted, to
		// be forgotten and redelivered.
		resolved, err := d.resolve(ctx, cmd)
		if err != nil {
			if d.runCtx.Err() != nil {
				return false
			}
			d.log.Info("command failed: its file could not be fetched", "command", id, "err", err)
			d.finish(id, d.failure(id, err))
			return true
		}
		cmd = resolved
	}
	if t.checkpoint == nil && !t.running {
		// The last step before the driver: from here on the command may
		// reach Messages, so a crash must settle it IN_DOUBT rather than
		// forget it. Not durably marked, it does not run.
		if err := d.journal.Start(id, d.chatDBMark(id)); err != nil {
			d.log.Error("journal start failed; command not run", "command", id, "err", err)
			d.emitResult(d.unrecorded(id, err))
			return false
		}
	}
	failpoint("before-driver")
	start := time.Now()
	driverCalled = true
	var snap *linev1.Snapshot
	var err error
	if r, ok := d.driver.(messages.Resumable); ok && t.checkpoint != nil {
		snap, err = r.Resume(ctx, cmd, t.checkpoint, report)
	} else {
		snap, err = d.driver.Execute(ctx, cmd, report)
	}
	if err != nil && d.runCtx.Err() != nil {
		// A hard stop interrupted it: we cannot tell whether Messages acted.
		// Leave it running in the journal; the next start settles it.
		d.log.Warn("command interrupted by shutdown", "command", id)
		return true
	}
	failpoint("after-driver")
	var res *linev1.CommandResult
	if err != nil {
		res = d.failure(id, err)
		d.log.Info("command failed", "command", id, "kind", command.KindName(cmd), "err", err, "took", time.Since(start))
	} else {
		res = &linev1.CommandResult{CommandId: id, FinishedAt: timestamppb.New(d.now()), Outcome: &linev1.CommandResult_Snapshot{Snapshot: snap}}
		d.log.Info("command succeeded", "command", id, "kind", command.KindName(cmd), "message_guid", snap.GetMessageGuid(), "took", time.Since(start))
	}
	d.finish(id, res)
	return true
}

// finish records a command's result and sends it, answering redeliveries
// from memory until the result is durable.
func (d *Dispatcher) finish(id string, res *linev1.CommandResult) {
	d.mu.Lock()
	d.finishing[id] = res
	d.mu.Unlock()
	d.wg.Add(1)
	d.journal.FinishAsync(res, func(err error) {
		defer d.wg.Done()
		if err != nil {
			d.log.Error("journal finish failed", "command", id, "err", err)
		}
		d.mu.Lock()
		delete(d.finishing, id)
		d.mu.Unlock()
	})
	d.emitResult(res)
}

func (d *Dispatcher) failure(id string, err error) *linev1.CommandResult {
	return &linev1.CommandResult{CommandId: id, FinishedAt: timestamppb.New(d.now()), Outcome: &linev1.CommandResult_Error{Error: command.AsError(err).Proto()}}
}

func (d *Dispatcher) emitResult(res *linev1.CommandResult) {
	d.observe(res)
	d.emit(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: res}})
}

// Drain stops taking commands and returns a channel closed once every queued
// and running command has finished.
func (d *Dispatcher) Drain() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draining = true
	ch := make(chan struct{})
	if d.queued == 0 {
		close(ch)
		return ch
	}
	if d.idle == nil {
		d.idle = make(chan struct{})
	}
	return d.idle
}

// Wait waits for every chat runner to return; call it after runCtx is done or
// the drain finished.
func (d *Dispatcher) Wait() { d.wg.Wait() }

// InFlight is the number of commands queued or running.
func (d *Dispatcher) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queued
}
