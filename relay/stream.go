package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/pkg/groupcommit"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// errReplaced ends a stream when the same agent opens a newer one.
var errReplaced = errors.New(replacedReason)

// session is one Connect stream. The handler goroutine owns it: it is the
// only one that sends, and it processes every received frame in order, so
// session state needs no lock. A separate receiver goroutine only reads
// frames into a bounded channel, so the watchdog sees arrivals even while
// the handler is busy with the database.
type session struct {
	s       *Server
	agentID string
	stream  linev1.LineRelay_ConnectServer
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{} // closed when the handler has finished with the agent

	frames  chan *linev1.AgentFrame // receiver → handler; closed after recvErr is set
	recvErr error
	kick    chan struct{} // "claim commands now"; capacity 1, coalesces

	lastRecvMono atomic.Int64 // real clock, for the watchdog
	lastSeen     atomic.Int64 // Options.Now clock, for operators

	// announced is set once from Hello before the session is attached;
	// read-only after. held is the part of it bound to this agent, renewed
	// at every heartbeat (an operator may move a line meanwhile); the hub
	// reads it from other goroutines.
	announced []string
	held      atomic.Pointer[[]string]
	// offered is Hello's capabilities by short name, set with announced
	// and read-only after: routing by health holds back only what the
	// agent offers (routing.go).
	offered []string
	// epoch is the stream's fencing token (agents.stream_epoch), set from
	// Hello before the session is attached and read-only after: its
	// writes count only while no newer stream of the agent exists, on
	// this replica or another (store.fenced).
	epoch int64

	// Handler goroutine only.
	//
	// sent holds the commands sent on this stream whose result it has
	// not had: at least what the agent has in flight (the sweeper may
	// fail some meanwhile, which only makes it larger). full is set when
	// the last claim left it at the in-flight limit, so that claim may
	// have left queued commands behind for want of room: a result then
	// claims again. Otherwise nothing claimable is waiting (whatever is
	// submitted later wakes the stream), and a result claims nothing.
	sent          map[string]struct{}
	full          bool
	goodbye       bool
	goodbyeReason string
	pendingCheck  string
	checks        int
	persistedSeen int64
}

// serves reports whether this stream's agent holds lineKey.
func (ss *session) serves(key string) bool { return slices.Contains(ss.heldKeys(), key) }

func (ss *session) heldKeys() []string {
	if p := ss.held.Load(); p != nil {
		return *p
	}
	return nil
}

// refreshHeld re-reads which announced lines this agent holds, so a line an
// operator moved here is served without a reconnect and one moved away is
// no longer claimed for.
func (ss *session) refreshHeld() {
	if len(ss.announced) == 0 {
		return
	}
	held, err := ss.s.store.heldLines(context.Background(), ss.agentID, ss.announced)
	if err != nil {
		ss.log.Warn("read line bindings", "err", err)
		return
	}
	if old := ss.heldKeys(); !slices.Equal(old, held) {
		ss.log.Info("lines held changed", "held", held, "was", old)
		ss.held.Store(&held)
		ss.kickDispatch()
	}
}

// kickDispatch asks the handler to claim commands; it never blocks.
func (ss *session) kickDispatch() {
	select {
	case ss.kick <- struct{}{}:
	default:
	}
}

// connect serves one Connect stream from authentication to teardown.
func (s *Server) connect(stream linev1.LineRelay_ConnectServer) error {
	agentID, err := s.authenticate(stream.Context())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	ss := &session{
		s:       s,
		agentID: agentID,
		stream:  stream,
		log:     s.log.With("agent_id", agentID),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		frames:  make(chan *linev1.AgentFrame, receiveQueue),
		kick:    make(chan struct{}, 1),
		sent:    map[string]struct{}{},
	}
	ss.markRecv()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ss.receive()
	}()
	defer close(ss.done)

	hello, err := ss.awaitHello()
	if err != nil {
		ss.log.Warn("stream refused", "err", err)
		return err
	}
	return ss.run(hello)
}

// receive reads frames until the stream ends. It outlives the handler only
// until gRPC cancels the stream, which happens as the handler returns.
func (ss *session) receive() {
	defer close(ss.frames)
	for {
		f, err := ss.stream.Recv()
		if err != nil {
			ss.recvErr = err
			return
		}
		ss.markRecv()
		select {
		case ss.frames <- f:
		case <-ss.ctx.Done():
			ss.recvErr = context.Cause(ss.ctx)
			return
		}
	}
}

func (ss *session) markRecv() {
	ss.lastRecvMono.Store(time.Now().UnixNano())
	ss.lastSeen.Store(ss.s.now().UnixNano())
}

// endErr is the handler's return once the receiver stopped: nil when the
// agent closed its side cleanly.
func (ss *session) endErr() error {
	if ss.recvErr == nil || errors.Is(ss.recvErr, io.EOF) {
		return nil
	}
	return ss.recvErr
}

// awaitHello waits for the first frame, which must be Hello (heartbeats
// before it are tolerated: the agent may send them until Welcome).
func (ss *session) awaitHello() (*linev1.Hello, error) {
	t := time.NewTimer(ss.s.opts.HelloTimeout)
	defer t.Stop()
	for {
		select {
		case f, ok := <-ss.frames:
			if !ok {
				if err := ss.endErr(); err != nil {
					return nil, err
				}
				return nil, status.Error(codes.InvalidArgument, "stream closed before Hello")
			}
			switch fr := f.GetFrame().(type) {
			case *linev1.AgentFrame_Hello:
				return fr.Hello, nil
			case *linev1.AgentFrame_Heartbeat:
				continue
			default:
				return nil, status.Errorf(codes.InvalidArgument, "the first frame must be Hello, got %s", frameName(f))
			}
		case <-t.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "no Hello within %s", ss.s.opts.HelloTimeout)
		case <-ss.s.ctx.Done():
			return nil, status.Error(codes.Unavailable, drainReasonShutdown)
		case <-ss.ctx.Done():
			return nil, status.FromContextError(ss.ctx.Err()).Err()
		}
	}
}

// run registers the agent, welcomes it and serves the stream until it ends.
func (ss *session) run(hello *linev1.Hello) (retErr error) {
	s := ss.s
	if hello.GetAgentId() != "" && hello.GetAgentId() != ss.agentID {
		return status.Error(codes.PermissionDenied, "Hello.agent_id does not match the access token's agent")
	}
	if len(hello.GetLines()) > command.MaxRepeated {
		return status.Errorf(codes.InvalidArgument, "Hello names %d lines; at most %d are accepted", len(hello.GetLines()), command.MaxRepeated)
	}
	for _, l := range hello.GetLines() {
		if err := command.CheckLine(l); err != nil {
			return status.Errorf(codes.InvalidArgument, "Hello: %s", err.Msg)
		}
	}
	ss.announced = lineKeys(hello.GetLines())
	caps := make([]string, 0, len(hello.GetCapabilities()))
	for _, c := range hello.GetCapabilities() {
		if n := command.CapabilityName(c); !slices.Contains(caps, n) {
			caps = append(caps, n)
		}
	}
	ss.offered = caps

	// Bind the lines before the stream is attached: from the moment an
	// operator sees the agent connected, its lines route to it.
	out, err := s.store.recordHello(context.Background(), ss.agentID, helloRecord{
		hostname: hello.GetHostname(), version: hello.GetVersion(), osVersion: hello.GetOsVersion(), driver: hello.GetDriver(),
		epoch: hello.GetJournalEpoch(), lines: hello.GetLines(), capabilities: caps,
		wantsCursor: hello.GetWantsChatdbCursor(), replica: s.replica,
	}, s.now())
	if err != nil {
		ss.log.Error("record hello", "err", err)
		return status.Error(codes.Internal, "the relay could not record the agent")
	}
	ss.epoch = out.epoch
	if old := s.hub.attach(ss); old != nil {
		ss.log.Info("replacing the agent's older stream")
		old.cancel(errReplaced)
		t := time.NewTimer(replacedStreamWait)
		select {
		case <-old.done:
		case <-t.C:
			ss.log.Warn("older stream did not end in time; continuing")
		}
		t.Stop()
	}
	defer func() {
		if s.hub.detach(ss) {
			reason := ss.goodbyeReason
			if !ss.goodbye && retErr != nil {
				reason = status.Convert(retErr).Message()
			}
			seen := time.Unix(0, ss.lastSeen.Load())
			if err := s.store.recordDisconnect(context.Background(), ss.agentID, ss.epoch, s.now(), seen, ss.goodbye, reason); err != nil {
				ss.log.Error("record disconnect", "err", err)
			}
			ss.log.Info("agent disconnected", "graceful", ss.goodbye, "reason", reason)
		}
	}()

	stored := out.storedSeq
	held := out.held
	ss.held.Store(&held)
	refused := make([]*linev1.RefusedLine, 0, len(out.refused))
	for _, r := range out.refused {
		ss.log.Warn("line refused: the agent announced a line it may not serve", "line", lineKey(r.Line), "reason", r.Reason)
		refused = append(refused, &linev1.RefusedLine{Line: r.Line, Reason: r.Reason})
	}
	if out.newEpoch {
		ss.log.Warn("the agent's journal is new (state.db deleted or restored): its event sequence starts again; stored events are still recognised by key",
			"journal_epoch", hello.GetJournalEpoch(), "previous_epoch", out.prevEpoch)
	}
	ss.persistedSeen = ss.lastSeen.Load()
	if err := ss.send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Welcome{Welcome: &linev1.Welcome{
		AgentId:           ss.agentID,
		HeartbeatInterval: durationpb.New(s.opts.HeartbeatInterval),
		Limits: &linev1.Limits{
			MaxUnackedEvents:    maxUnackedEvents,
			MaxInFlightCommands: maxInFlightCommands,
		},
		StoredEventSequence: stored,
		RelayVersion:        Version,
		RefusedLines:        refused,
		AckedChatdbCursor:   out.ackedCursor,
	}}}); err != nil {
		return err
	}
	ss.log.Info("agent connected", "hostname", hello.GetHostname(), "version", hello.GetVersion(), "driver", hello.GetDriver(),
		"lines", len(held), "refused_lines", len(refused), "acked_event_sequence", hello.GetAckedEventSequence(), "stored_event_sequence", stored)

	if err := ss.sendHealthCheck(); err != nil {
		return err
	}
	if err := ss.dispatch(true); err != nil {
		return err
	}
	return ss.loop()
}

// loop is the steady state: frames in, heartbeats and health checks out,
// commands out when there is work, and the watchdog.
func (ss *session) loop() error {
	s := ss.s
	hbEvery := s.opts.HeartbeatInterval
	silence := 2 * hbEvery
	hb := time.NewTicker(hbEvery)
	defer hb.Stop()
	hc := time.NewTicker(s.opts.HealthCheckInterval)
	defer hc.Stop()
	wd := time.NewTimer(silence)
	defer wd.Stop()
	for {
		select {
		case <-s.ctx.Done():
			// Best effort: tell the agent this is a drain, not a crash.
			_ = ss.send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Drain{Drain: &linev1.Drain{Reason: drainReasonShutdown}}})
			return status.Error(codes.Unavailable, drainReasonShutdown)
		case <-ss.ctx.Done():
			return status.Error(codes.Aborted, context.Cause(ss.ctx).Error())
		case f, ok := <-ss.frames:
			if !ok {
				return ss.endErr()
			}
			if err := ss.handle(f); err != nil {
				return err
			}
		case <-ss.kick:
			if err := ss.dispatch(false); err != nil {
				return err
			}
		case <-hb.C:
			if err := ss.send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Heartbeat{Heartbeat: &linev1.Heartbeat{SentAt: timestamppb.New(s.now())}}}); err != nil {
				return err
			}
			ss.persistSeen()
			ss.refreshHeld()
		case <-hc.C:
			if err := ss.sendHealthCheck(); err != nil {
				return err
			}
		case <-wd.C:
			quiet := time.Since(time.Unix(0, ss.lastRecvMono.Load()))
			if quiet >= silence {
				ss.log.Warn("watchdog: agent silent, closing the stream", "silent_for", quiet.Round(time.Millisecond))
				return status.Errorf(codes.Unavailable, "no frame from the agent for %s (heartbeat interval %s)", quiet.Round(time.Millisecond), hbEvery)
			}
			wd.Reset(silence - quiet)
		}
	}
}

// send writes one frame; only the handler goroutine calls it.
func (ss *session) send(f *linev1.RelayFrame) error {
	if err := ss.stream.Send(f); err != nil {
		return err
	}
	return nil
}

// persistSeen writes last_seen at most once per heartbeat, so operators see
// a recent time after a relay restart without a write per frame.
func (ss *session) persistSeen() {
	seen := ss.lastSeen.Load()
	if seen == ss.persistedSeen {
		return
	}
	ss.persistedSeen = seen
	if err := ss.s.store.touchAgent(context.Background(), ss.agentID, time.Unix(0, seen)); err != nil {
		ss.log.Warn("persist last seen", "err", err)
	}
}

// handle processes first and then everything already queued behind it.
// The writes of consecutive events, command updates and command results are
// queued to the store's writer together and waited for once, so a burst
// costs one commit (shared with whatever else is waiting) and its events
// are acknowledged with one EventAck. They are flushed when the queue runs
// dry, at 256 events or after 50 ms of events, or at 256 updates and
// results, whichever comes first; any other frame (except a heartbeat,
// which changes nothing) flushes them before it is handled, so frames take
// effect in the order they were sent.
func (ss *session) handle(first *linev1.AgentFrame) error {
	var w frameWrites
	f := first
	for n := 0; ; n++ {
		switch {
		case f.GetEvent() != nil:
			if len(w.events) == 0 {
				w.eventStart = time.Now()
			}
			w.events = append(w.events, f.GetEvent())
			if len(w.events) >= eventAckBatch || time.Since(w.eventStart) >= eventAckDelay {
				if err := ss.flush(&w); err != nil {
					return err
				}
			}
		case f.GetUpdate() != nil || f.GetResult() != nil:
			w.commands = append(w.commands, f)
			if len(w.commands) >= commandWriteBatch {
				if err := ss.flush(&w); err != nil {
					return err
				}
			}
		case f.GetHeartbeat() != nil:
			// Arrival alone feeds the watchdog and last_seen.
		default:
			if err := ss.flush(&w); err != nil {
				return err
			}
			if err := ss.handleOne(f); err != nil {
				return err
			}
		}
		if n >= maxFramesPerDrain {
			break // let heartbeats and the watchdog have a turn
		}
		next, ok := ss.tryNext()
		if !ok {
			break
		}
		f = next
	}
	return ss.flush(&w)
}

// commandWriteBatch bounds the updates and results flushed together.
const commandWriteBatch = 256

// frameWrites is what handle has gathered and not yet written.
type frameWrites struct {
	events     []*linev1.Event
	eventStart time.Time
	commands   []*linev1.AgentFrame // updates and results, in arrival order
}

// flush queues w's writes to the store as one group (events first, then
// updates and results in arrival order), waits for their commit, then
// reports: each result is logged as finished only once it is stored, and
// the EventAck goes out only after the commit, so an acked event is
// durable. An update followed in the same group by a result for the same
// command, and carrying neither progress nor detail, is not written at all:
// the result replaces the state it would set and nothing else of it would
// remain, so writing it is a wasted statement (the operator sees the
// command go from dispatched to its final state, as with any update that
// arrives after the result).
func (ss *session) flush(w *frameWrites) error {
	events, commands := w.events, w.commands
	w.events, w.commands = nil, nil
	if len(events) == 0 && len(commands) == 0 {
		return nil
	}
	s := ss.s
	ctx := context.Background()
	var (
		jobs          []*groupcommit.Job
		evJob         *groupcommit.Job
		stored        uint64
		added         int
		foreign       []string
		updatesDone   []func()
		resultsDone   []func() bool
		resultIDs     []string
		resultPending = map[string]int{} // command id → results still ahead
	)
	if len(events) > 0 {
		in := make([]eventIn, 0, len(events))
		for _, ev := range events {
			if ev.GetSequence() == 0 {
				ss.log.Warn("dropping an event without a sequence", "key", ev.GetKey())
				continue
			}
			b, err := proto.Marshal(ev)
			if err != nil {
				return status.Errorf(codes.InvalidArgument, "event %d cannot be encoded: %v", ev.GetSequence(), err)
			}
			in = append(in, eventIn{seq: ev.GetSequence(), key: ev.GetKey(), lineKey: lineKey(ev.GetLine()), bytes: b})
		}
		evJob = groupcommit.NewJob(ctx, s.store.fenced(ctx, ss.agentID, ss.epoch, s.store.storeEventsFn(ctx, ss.agentID, in, s.now(), &stored, &added, &foreign)))
		jobs = append(jobs, evJob)
	}
	for _, f := range commands {
		if r := f.GetResult(); r != nil {
			resultPending[r.GetCommandId()]++
		}
	}
	for _, f := range commands {
		if u := f.GetUpdate(); u != nil {
			if resultPending[u.GetCommandId()] > 0 && u.GetProgress() == nil && u.GetDetail() == "" {
				ss.log.Debug("command update superseded by its result", "command_id", u.GetCommandId())
				continue
			}
			j, done := s.updateJob(ss, u)
			jobs = append(jobs, j)
			updatesDone = append(updatesDone, done)
			continue
		}
		r := f.GetResult()
		resultPending[r.GetCommandId()]--
		j, done := s.resultJob(ss, r)
		jobs = append(jobs, j)
		resultsDone = append(resultsDone, done)
		resultIDs = append(resultIDs, r.GetCommandId())
	}
	// A result frees a slot in the in-flight window: when the last claim
	// filled it, claim what can take the slot in the same commit, after
	// the results (the writer keeps the order).
	var claimDone func(error) error
	if len(resultsDone) > 0 && ss.full {
		var cj *groupcommit.Job
		if cj, claimDone = ss.claim(false); cj != nil {
			jobs = append(jobs, cj)
		}
	}
	queueErr := s.store.w.Queue(jobs...)
	if queueErr != nil {
		if claimDone != nil {
			claimDone(queueErr)
		}
		ss.log.Error("store frames", "err", queueErr)
		return status.Error(codes.Internal, "the relay could not store what the agent sent; reconnect and resend")
	}
	for _, done := range updatesDone {
		done()
	}
	for i, done := range resultsDone {
		if done() {
			delete(ss.sent, resultIDs[i])
		}
	}
	if claimDone != nil {
		if err := claimDone(nil); err != nil {
			return err
		}
	}
	for _, j := range jobs {
		if errors.Is(j.Wait(), errFenced) {
			return ss.lostAgent()
		}
	}
	if evJob == nil {
		return nil
	}
	if err := evJob.Wait(); err != nil {
		ss.log.Error("store events", "err", err)
		return status.Error(codes.Internal, "the relay could not store events; reconnect and resend")
	}
	if added > 0 {
		s.metrics.eventsStored.Add(float64(added))
		s.feed.notify()
	}
	for _, k := range foreign {
		ss.log.Warn("event dropped: its line is not held by this agent", "line", k)
	}
	ss.log.Debug("events stored", "received", len(events), "added", added, "acked", stored)
	return ss.send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_EventAck{EventAck: &linev1.EventAck{Sequence: stored}}})
}

// tryNext returns the next queued frame without waiting.
func (ss *session) tryNext() (*linev1.AgentFrame, bool) {
	select {
	case f, ok := <-ss.frames:
		if !ok {
			// Put nothing back: the main loop sees the closed channel next.
			return nil, false
		}
		return f, true
	default:
		return nil, false
	}
}

// handleOne applies one non-event frame.
func (ss *session) handleOne(f *linev1.AgentFrame) error {
	s := ss.s
	switch fr := f.GetFrame().(type) {
	case *linev1.AgentFrame_Hello:
		ss.log.Warn("ignoring a second Hello on the stream")
	case *linev1.AgentFrame_Heartbeat:
		// Arrival alone feeds the watchdog and last_seen.
	case *linev1.AgentFrame_Health:
		r := fr.Health
		answered := r.GetCheckId() != "" && r.GetCheckId() == ss.pendingCheck
		if answered {
			ss.pendingCheck = ""
		}
		healthy := s.hub.report(ss, r, answered, s.opts.HealthMissedLimit)
		if b, err := proto.Marshal(r); err == nil {
			if err := s.store.saveHealth(context.Background(), ss.agentID, ss.epoch, b, healthy); err != nil {
				ss.log.Warn("persist health report", "err", err)
			}
		}
		ss.log.Debug("health report", "status", healthStatusName(r.GetStatus()), "answered", answered, "healthy", healthy)
	case *linev1.AgentFrame_CursorMark:
		ss.takeCursorMark(fr.CursorMark)
	case *linev1.AgentFrame_Goodbye:
		ss.goodbye, ss.goodbyeReason = true, fr.Goodbye.GetReason()
		ss.log.Info("agent said goodbye", "reason", ss.goodbyeReason)
	default:
		ss.log.Warn("ignoring an empty or unknown frame")
	}
	return nil
}

// sendHealthCheck asks for a report. A check still unanswered when the next
// one is due counts as missed.
func (ss *session) sendHealthCheck() error {
	if ss.pendingCheck != "" {
		if missed := ss.s.hub.checkMissed(ss, ss.s.opts.HealthMissedLimit); missed == ss.s.opts.HealthMissedLimit {
			ss.log.Warn("agent unhealthy: health checks unanswered", "missed", missed)
			if err := ss.s.store.saveHealthy(context.Background(), ss.agentID, ss.epoch, false); err != nil {
				ss.log.Warn("persist health", "err", err)
			}
		}
	}
	ss.checks++
	ss.pendingCheck = fmt.Sprintf("%s%d", healthCheckIDPrefix, ss.checks)
	return ss.send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_HealthCheck{HealthCheck: &linev1.HealthCheck{Id: ss.pendingCheck}}})
}

// dispatch sends the agent what it should have: on connect (redeliver) every
// unfinished command already assigned to it, then queued commands for its
// lines up to the in-flight limit. Nothing new goes to an agent that said
// Goodbye.
func (ss *session) dispatch(redeliver bool) error {
	j, finish := ss.claim(redeliver)
	if j == nil {
		return nil
	}
	return finish(ss.s.store.w.Queue(j))
}

// claim prepares dispatch's claim as a write job (nil when there is nothing
// to do), so flush can queue it in the same commit as the results that
// freed the slots. finish takes the outcome of queueing the job, waits for
// it and sends what it claimed; it must be called exactly once. The agent's
// dispatch lock is held from here until the claim has committed.
func (ss *session) claim(redeliver bool) (*groupcommit.Job, func(queueErr error) error) {
	if ss.goodbye {
		return nil, nil
	}
	s := ss.s
	mu := s.hub.dispatchLock(ss.agentID)
	mu.Lock()
	if !s.hub.current(ss) {
		mu.Unlock()
		return nil, nil
	}
	var rows []*commandRow
	ctx := context.Background()
	s.metrics.claims.Inc()
	j := groupcommit.NewJob(ctx, s.store.fenced(ctx, ss.agentID, ss.epoch,
		s.store.claimCommandsFn(ctx, ss.agentID, ss.heldKeys(), heldTokens(s.hub.heldNeeds(ss.agentID)), redeliver, maxInFlightCommands, s.now(), &rows)))
	return j, func(queueErr error) error {
		err := queueErr
		if err == nil {
			err = j.Wait()
		}
		mu.Unlock()
		if errors.Is(err, errFenced) {
			return ss.lostAgent()
		}
		if err != nil {
			ss.log.Error("claim commands", "err", err)
			return status.Error(codes.Internal, "the relay could not read its command queue")
		}
		for _, r := range rows {
			// Claimed means in flight, sent or not.
			ss.sent[r.id] = struct{}{}
			cmd := &linev1.Command{}
			if err := proto.Unmarshal(r.command, cmd); err != nil {
				ss.log.Error("stored command is unreadable", "command_id", r.id, "err", err)
				continue
			}
			if err := ss.send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Command{Command: cmd}}); err != nil {
				return err
			}
			ss.log.Debug("command sent", "command_id", r.id, "kind", r.kind, "state", r.state)
			s.metrics.dispatched.Inc()
		}
		if len(ss.sent) > 2*maxInFlightCommands {
			ss.resyncSent()
		}
		ss.full = len(ss.sent) >= maxInFlightCommands
		return nil
	}
}

// resyncSent makes sent the store's commands in flight to the agent: the
// ones the sweeper failed never get a result here and would otherwise
// stay in sent while the stream lives, growing it without bound. It runs
// after a claim committed, on the handler goroutine, so everything this
// stream claimed is in the store's answer; on an error sent stays as it
// is (too large is safe).
func (ss *session) resyncSent() {
	ids, err := ss.s.store.inFlight(context.Background(), ss.agentID)
	if err != nil {
		ss.log.Warn("read the commands in flight", "err", err)
		return
	}
	ss.sent = make(map[string]struct{}, len(ids))
	for _, id := range ids {
		ss.sent[id] = struct{}{}
	}
}

// lostAgent ends a stream whose write was fenced: the agent has a newer
// stream (on another replica, whose Hello this replica had not heard of
// yet), and this one's writes no longer count. Its dropped writes come
// back on the newer stream (errFenced).
func (ss *session) lostAgent() error {
	ss.log.Info("the agent has a newer stream; ending this one, whose writes were dropped", "stream_epoch", ss.epoch)
	return status.Error(codes.Aborted, replacedReason)
}

// frameName names an agent frame's kind for messages.
func frameName(f *linev1.AgentFrame) string {
	if f == nil || f.GetFrame() == nil {
		return "an empty frame"
	}
	m := f.ProtoReflect()
	return string(m.WhichOneof(m.Descriptor().Oneofs().ByName("frame")).Name())
}
