package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/pkg/groupcommit"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// SubmitCommand queues cmd for the agent holding cmd.line. The command id
// is the idempotency key: a repeated id with the same body changes nothing
// and returns created false, so a caller's retry can never become a second
// send; a repeated id with a different body is refused with an error
// wrapping ErrIDConflict, so a client bug is visible. A command without a
// deadline gets now + Options.DefaultCommandTimeout. Invalid input is a
// *command.Error with code INVALID_ARGUMENT; a line no agent holds is
// NOT_FOUND. File data larger than a stream frame should carry is kept as
// a blob the agent fetches (FetchBlob), never sent inline.
func (s *Server) SubmitCommand(ctx context.Context, cmd *linev1.Command) (created bool, err error) {
	created, _, err = s.submitCommand(ctx, cmd, false)
	return created, err
}

// submitCommand is SubmitCommand; with relayBlob the command's BlobRef
// names file data the relay already holds (a platform API upload,
// api_attachments.go), which no outside caller may do. When it created
// the command it returns the deadline stored with it, so a caller that
// waits for the result knows its bound without reading the row back.
func (s *Server) submitCommand(ctx context.Context, cmd *linev1.Command, relayBlob bool) (created bool, deadline time.Time, err error) {
	now := s.now()
	if err := validateCommand(cmd, now, relayBlob); err != nil {
		return false, time.Time{}, err
	}
	cmd = proto.Clone(cmd).(*linev1.Command)
	cmd.Line = strings.TrimSpace(cmd.GetLine())
	fp, err := fingerprint(cmd)
	if err != nil {
		return false, time.Time{}, err
	}
	key := lineKey(cmd.GetLine())
	owner, err := s.store.lineOwner(ctx, key)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("relay: read line bindings: %w", err)
	}
	if owner == "" {
		if prev, err := s.store.command(ctx, cmd.GetId()); err == nil && prev != nil {
			return false, time.Time{}, s.sameOrConflict(prev, fp)
		}
		return false, time.Time{}, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND,
			"no agent serves line %s: enroll a Mac for it (line-agent enroll) or check the spelling", key)
	}
	if cmd.GetDeadline() == nil {
		cmd.Deadline = timestamppb.New(now.Add(s.opts.DefaultCommandTimeout))
	}
	blob := extractBlob(cmd)
	if n := proto.Size(cmd); n > maxCommandFrame {
		return false, time.Time{}, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the command is %d bytes without its file data; at most %d are accepted", n, maxCommandFrame)
	}
	b, err := proto.Marshal(cmd)
	if err != nil {
		return false, time.Time{}, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the command cannot be encoded: %v", err)
	}
	created, prev, err := s.store.insertCommand(ctx, &commandRow{
		id: cmd.GetId(), line: cmd.GetLine(), kind: command.KindName(cmd), command: b,
		deadline: cmd.GetDeadline().AsTime(), created: now, fingerprint: fp, needs: needsOf(cmd),
	}, key, blob)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("relay: store command: %w", err)
	}
	if !created {
		return false, time.Time{}, s.sameOrConflict(prev, fp)
	}
	s.log.Info("command queued", "command_id", cmd.GetId(), "kind", command.KindName(cmd), "deadline", cmd.GetDeadline().AsTime(), "blob_bytes", blob.size())
	s.metrics.submitted.WithLabelValues(command.KindName(cmd)).Inc()
	s.hub.kickLine(key)
	// Wake the sweeper only when this deadline comes before the moment
	// it means to look next (runSweeper says how, with sweepSeen first):
	// an idle sweep is a write transaction, and most commands expire long
	// after the next one.
	d := cmd.GetDeadline().AsTime().UnixNano()
	for seen := s.sweepSeen.Load(); d < seen && !s.sweepSeen.CompareAndSwap(seen, d); seen = s.sweepSeen.Load() {
	}
	if d < s.sweepWake.Load() {
		s.kickSweeper()
	}
	return true, cmd.GetDeadline().AsTime(), nil
}

// ErrIDConflict is wrapped by SubmitCommand's error when a command id is
// reused for a different command.
var ErrIDConflict = errors.New("relay: the id is already used by a different command")

// sameOrConflict answers a repeated id: nil when it is the same command (a
// retry), ErrIDConflict otherwise. A command stored before fingerprints
// existed has none and counts as the same.
func (s *Server) sameOrConflict(prev *commandRow, fp string) error {
	if prev == nil || prev.fingerprint == "" || prev.fingerprint == fp {
		return nil
	}
	s.log.Warn("command id reused with a different body", "command_id", prev.id)
	return fmt.Errorf("command %q: %w", prev.id, ErrIDConflict)
}

// fingerprint identifies what was submitted (before the relay's defaults
// and blob extraction), so a retry is told from a reused id.
func fingerprint(cmd *linev1.Command) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		return "", command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the command cannot be encoded: %v", err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// validateCommand checks what the relay needs to route a command and what
// every door checks (command.Check); what the kind itself needs from
// Messages is the agent's to judge, with a typed error.
func validateCommand(cmd *linev1.Command, now time.Time, relayBlob bool) error {
	invalid := func(format string, args ...any) error {
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, format, args...)
	}
	switch {
	case cmd == nil:
		return invalid("a command is required")
	case strings.TrimSpace(cmd.GetId()) == "":
		return invalid("id is required (it is the idempotency key)")
	case strings.TrimSpace(cmd.GetLine()) == "":
		return invalid("line is required (the phone number or handle that sends)")
	}
	if !relayBlob && (cmd.GetSendAttachment().GetBlob() != nil || cmd.GetSetBackground().GetBlob() != nil) {
		return invalid("blob is set by the relay itself; give the file as data or an HTTPS url")
	}
	if err := command.Check(cmd, now); err != nil {
		return err
	}
	return nil
}

// updateJob prepares a CommandUpdate as a write job. Updates only move a
// command forward and only count from the agent it was dispatched to. done
// logs the outcome once the job's batch has committed.
func (s *Server) updateJob(ss *session, u *linev1.CommandUpdate) (j *groupcommit.Job, done func()) {
	to := stateAccepted
	if u.GetState() == linev1.CommandState_COMMAND_STATE_IN_PROGRESS {
		to = stateInProgress
	}
	var progress []byte
	if u.GetProgress() != nil {
		progress, _ = proto.Marshal(u.GetProgress())
	}
	var changed bool
	ctx := context.Background()
	j = groupcommit.NewJob(ctx, s.store.fenced(ctx, ss.agentID, ss.epoch,
		s.store.updateCommandFn(ctx, u.GetCommandId(), ss.agentID, to, progress, u.GetDetail(), s.now(), &changed)))
	return j, func() {
		err := j.Wait()
		if errors.Is(err, errFenced) {
			ss.log.Debug("command update dropped: the agent has a newer stream", "command_id", u.GetCommandId())
			return
		}
		if err != nil {
			ss.log.Error("store command update", "command_id", u.GetCommandId(), "err", err)
			return
		}
		if !changed {
			ss.log.Debug("command update ignored (unknown, finished or not this agent's)", "command_id", u.GetCommandId())
		}
	}
}

// resultJob prepares a CommandResult as a write job. Final states never
// change: a second result is ignored. done waits for the job's batch to
// commit, logs, and reports whether the command is out of the agent's
// in-flight window now (this result finished it, or it was already final,
// unknown or another agent's); false when the result could not be stored.
// The "command finished" record is written only once the result is stored.
// Updates and results count only for the agent's newest stream (fenced):
// one from a stream that lost the agent is dropped.
func (s *Server) resultJob(ss *session, r *linev1.CommandResult) (j *groupcommit.Job, done func() bool) {
	var (
		state              string
		result, errProto   []byte
		errCode, errMsg    string
		ctx                = context.Background()
		id                 = r.GetCommandId()
		snapshot, cmdError = r.GetSnapshot(), r.GetError()
	)
	switch {
	case snapshot != nil:
		state = stateSucceeded
		result, _ = proto.Marshal(snapshot)
	case cmdError != nil:
		state = stateFailed
		e := proto.Clone(cmdError).(*linev1.CommandError)
		if e.GetCode() == linev1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			e.Code = linev1.ErrorCode_ERROR_CODE_INTERNAL
		}
		errCode, errMsg = command.CodeName(e.GetCode()), e.GetMessage()
		errProto, _ = proto.Marshal(e)
	default:
		state = stateFailed
		e := &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, Message: "the agent's result carried neither a snapshot nor an error"}
		errCode, errMsg = command.CodeName(e.GetCode()), e.GetMessage()
		errProto, _ = proto.Marshal(e)
	}
	var final *commandRow
	j = groupcommit.NewJob(ctx, s.store.fenced(ctx, ss.agentID, ss.epoch,
		s.store.finishCommandFn(ctx, id, ss.agentID, state, result, errCode, errMsg, errProto, s.now(), &final)))
	return j, func() bool {
		err := j.Wait()
		if errors.Is(err, errFenced) {
			ss.log.Info("command result dropped: the agent has a newer stream, which gets it again", "command_id", id)
			return false
		}
		if err != nil {
			ss.log.Error("store command result", "command_id", id, "err", err)
			return false
		}
		if final == nil {
			ss.log.Debug("command result ignored (unknown, already final or not this agent's)", "command_id", id)
			return true
		}
		ss.log.Info("command finished", "command_id", id, "state", state, "code", errCode)
		s.metrics.finished.WithLabelValues(resultLabel(errCode)).Inc()
		s.cmdDone.finished(id, final)
		return true
	}
}

func (s *Server) kickSweeper() {
	select {
	case s.sweepKick <- struct{}{}:
	default:
	}
}

// runSweeper fails commands whose deadline passed without a result, and
// prunes what outlived its retention. It sleeps until the earliest
// deadline (at most sweepMaxSleep, so a changed clock is noticed) and
// wakes early for a command submitted with an earlier one.
//
// A submit kicks the sweeper when its deadline is before sweepWake, the
// moment the sweeper means to look next; during a turn sweepWake is the
// lowest value, so nothing kicks (a kicked turn would come right after
// this one, and under a steady load, for ever). Instead each submit first
// lowers sweepSeen to its deadline, and the turn, once it has stored its
// wake, takes sweepSeen and looks sooner if it is earlier: a submit that
// lowered sweepSeen after that is one whose read of sweepWake comes after
// the store, and kicks if it must (Go's atomics are sequentially
// consistent).
func (s *Server) runSweeper() {
	t := time.NewTimer(0)
	defer t.Stop()
	var pruned time.Time // monotonic: the last retention pass
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.sweepKick:
		}
		s.metrics.sweeps.Inc()
		s.sweepWake.Store(math.MinInt64)
		s.sweep()
		// Retention is not urgent: a kicked turn (an early deadline)
		// does not prune again within sweepMaxSleep of the last prune.
		if pruned.IsZero() || time.Since(pruned) >= sweepMaxSleep {
			pruned = time.Now()
			s.retain()
		}
		wait := sweepMaxSleep
		if next, ok, err := s.store.nextDeadline(s.ctx, s.opts.ResultGrace); err == nil && ok {
			if d := next.Sub(s.now()); d < wait {
				wait = max(d, time.Millisecond)
			}
		} else if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("sweeper: next deadline", "err", err)
		}
		now := s.now()
		s.sweepWake.Store(now.Add(wait).UnixNano())
		if seen := s.sweepSeen.Swap(math.MaxInt64); seen < now.Add(wait).UnixNano() {
			wait = max(time.Unix(0, seen).Sub(now), time.Millisecond)
			s.sweepWake.Store(now.Add(wait).UnixNano())
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// sweep fails every expired command with DEADLINE_EXCEEDED and the last
// state it reached, and frees its slot on the agent.
func (s *Server) sweep() {
	expired, err := s.store.expireCommands(s.ctx, s.now(), s.opts.ResultGrace, deadlineError)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.log.Error("sweeper: expire commands", "err", err)
		}
		return
	}
	for _, e := range expired {
		s.log.Info("command failed: deadline passed", "command_id", e.id, "last_state", e.lastState, "agent_id", e.agentID)
		s.metrics.finished.WithLabelValues(resultLabel(command.CodeName(linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED))).Inc()
		s.cmdDone.finished(e.id, nil)
		if e.agentID != "" {
			s.hub.kickAgent(e.agentID)
		}
	}
}

// deadlineError is the stored failure for a command the relay gave up on.
func deadlineError(lastState string) (code, msg string, p []byte) {
	e := &linev1.CommandError{
		Code:      linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED,
		Message:   "no result before the deadline; last state: " + lastState,
		LastState: lastState,
	}
	p, _ = proto.Marshal(e)
	return command.CodeName(e.GetCode()), e.GetMessage(), p
}

// CommandView returns a command as the HTTP API shows it, or an error
// wrapping ErrNotFound for an unknown id.
func (s *Server) CommandView(id string) (*CommandView, error) {
	r, err := s.store.command(context.Background(), id)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("command %q: %w", id, ErrNotFound)
	}
	return commandView(r), nil
}
