package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/protobuf/proto"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Several replicas on one PostgreSQL store (docs/scaling.md). Every
// replica accepts agent streams, the operator API and the platform API.
// What one commits, the others hear of in two ways:
//
//   - announcements: the write's own transaction NOTIFYs (store.announce),
//     and each replica LISTENs on a connection of its own
//     (replica_listen.go) and turns each into the wake-up a commit of its
//     own would have given: a stream claims the command queued for its
//     line, event subscribers read on, a platform API call waiting for a
//     command reads its final state, an older stream of an agent that
//     connected elsewhere ends;
//   - the poll, every Options.ReplicaPoll, the backstop for a notification
//     lost or a LISTEN connection down: it looks at the store for what the
//     announcements would have said (new queued commands for the lines of
//     its streams, a new event head, final states of the commands its
//     calls wait for, newer stream epochs of its agents), and records that
//     the replica is alive.
//
// One live stream per agent across the fleet: every Hello gives the agent
// a new stream epoch (store.recordHello), the newest connection wins, and
// a stream's writes count only while its epoch is the agent's
// (store.fenced).

// replicaIDMax bounds Options.ReplicaID.
const replicaIDMax = 64

// replicaDeadAfter is how many polls a replica may miss before the others
// count the streams it held as gone.
const replicaDeadAfter = 5

// replicaName is this process's replica id: the configured name (the host
// name when none) and a random suffix, so that a replica restarted under
// the same name is never taken for the run before it, whose streams died
// with it.
func replicaName(name string) (string, error) {
	if name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "relay"
		}
		name = h
	}
	if len(name) > replicaIDMax || strings.IndexFunc(name, unicode.IsSpace) >= 0 {
		return "", fmt.Errorf("relay: the replica id %q must be at most %d bytes without spaces", name, replicaIDMax)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return name + "." + hex.EncodeToString(b[:]), nil
}

// ReplicaID is this process's replica id (Options.ReplicaID and its
// random suffix), as GET /v1/agents names the replica holding a stream.
func (s *Server) ReplicaID() string { return s.replica }

// fleet is one replica's part among the replicas of one PostgreSQL store:
// its LISTEN connection and its poll. A relay on SQLite has none.
type fleet struct {
	s       *Server
	log     *slog.Logger
	started time.Time
	// resyncs asks the poll to look at everything at once: the LISTEN
	// connection was (re)made and announcements may have been missed.
	resyncs chan struct{}

	// Poll goroutine only.
	marks  map[string]int64 // line key → newest queued command seen (queuedMarks)
	head   int64            // event head seen
	failed int              // polls failed in a row (logged once per outage)

	mu        sync.Mutex
	listening bool // the LISTEN connection is up; guarded by mu
}

func newFleet(s *Server) *fleet {
	return &fleet{
		s: s, log: s.log.With("replica", s.replica), started: s.now(),
		resyncs: make(chan struct{}, 1), marks: map[string]int64{},
	}
}

// start runs the LISTEN connection and the poll until the relay closes.
func (f *fleet) start(wg *sync.WaitGroup) {
	ctx := f.s.ctx
	if !f.s.opts.noListen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.runListen(ctx)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.runPoll(ctx)
	}()
}

// resync wakes everything that waits for another replica's commit, once:
// every stream claims, event subscribers read, waiting calls read their
// command; then the poll looks at the rest (stream epochs).
func (f *fleet) resync() {
	f.s.hub.kickAll()
	f.s.feed.notify()
	f.s.cmdDone.wakeAll()
	select {
	case f.resyncs <- struct{}{}:
	default:
	}
}

// runPoll polls every Options.ReplicaPoll, and at once when resync asks.
func (f *fleet) runPoll(ctx context.Context) {
	t := time.NewTicker(f.s.opts.ReplicaPoll)
	defer t.Stop()
	for {
		f.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.resyncs:
		}
	}
}

// errStoreLost ends the streams of a replica that cannot reach its store.
var errStoreLost = errors.New("the relay cannot reach its store; connect to another replica")

// poll is one look at the store for what announcements would have said.
// Each read is bounded, so a store that does not answer delays the next
// poll, not the relay; a failing poll is logged once until one succeeds.
// After replicaDeadAfter failures in a row the other replicas count this
// one's streams as gone, and so it ends them: an agent whose replica was
// cut off from the store goes to one that is not, rather than wait on a
// stream whose commands nobody else can reach.
func (f *fleet) poll(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, max(f.s.opts.ReplicaPoll, pollTimeout))
	defer cancel()
	err := f.pollOnce(pctx)
	switch {
	case ctx.Err() != nil:
	case err != nil:
		f.failed++
		if f.failed == 1 {
			f.log.Warn("replica poll failing: announcements of other replicas may be missed until it succeeds", "err", err)
		}
		if f.failed == replicaDeadAfter {
			f.log.Warn("replica: the store has been unreachable for "+strconv.Itoa(replicaDeadAfter)+" polls; ending this replica's agent streams so they connect elsewhere", "err", err)
			f.s.hub.endAll(errStoreLost)
		}
	case f.failed > 0:
		f.failed = 0
		f.log.Info("replica poll succeeds again")
	}
}

// pollTimeout bounds one poll at least.
const pollTimeout = 5 * time.Second

func (f *fleet) pollOnce(ctx context.Context) error {
	s := f.s
	now := s.now()
	if err := s.store.replicaAlive(ctx, s.replica, f.started, now, now.Add(-time.Hour)); err != nil {
		return fmt.Errorf("record the replica alive: %w", err)
	}
	streams := s.hub.streams()
	var lines, agents []string
	for _, ls := range streams {
		lines = append(lines, ls.lines...)
		agents = append(agents, ls.agentID)
	}
	marks, err := s.store.queuedMarks(ctx, lines)
	if err != nil {
		return fmt.Errorf("read the queued commands: %w", err)
	}
	for k, m := range marks {
		if m > f.marks[k] {
			s.hub.kickLine(k)
		}
	}
	f.marks = marks
	head, err := s.store.eventHead(ctx)
	if err != nil {
		return fmt.Errorf("read the event head: %w", err)
	}
	if head != f.head {
		f.head = head
		s.feed.notify()
	}
	done, err := s.store.finishedAmong(ctx, s.cmdDone.watching())
	if err != nil {
		return fmt.Errorf("read the waited-for commands: %w", err)
	}
	for _, id := range done {
		s.cmdDone.finished(id, nil)
	}
	epochs, err := s.store.streamEpochs(ctx, agents)
	if err != nil {
		return fmt.Errorf("read the stream epochs: %w", err)
	}
	for _, ls := range streams {
		if e := epochs[ls.agentID]; e > ls.epoch && s.hub.fence(ls.agentID, e) {
			f.log.Info("ending a stream: the agent connected again, to another replica", "agent_id", ls.agentID, "stream_epoch", ls.epoch, "newer_epoch", e)
		}
	}
	return nil
}

// remoteStream is the live state of an agent whose stream another replica
// holds, as the store shows it: connected while that replica is alive
// and the stream has not ended; healthy as that replica last counted it;
// held back by what its last report leaves unmet (routing.go). ok is
// false when no other live replica holds a stream of the agent.
func (s *Server) remoteStream(rec streamRecord, lastHealth []byte, offered []string) (live liveState, ok bool) {
	if s.fleet == nil || rec.replica == "" || rec.replica == s.replica || rec.disconnected ||
		s.now().Sub(rec.replicaSeen) >= replicaDeadAfter*s.opts.ReplicaPoll {
		return liveState{}, false
	}
	live = liveState{connected: true, healthy: rec.healthy, replica: rec.replica}
	if len(lastHealth) > 0 {
		r := &linev1.HealthReport{}
		if proto.Unmarshal(lastHealth, r) == nil {
			live.lastHealth = r
			live.held = unmetRequirements(r, offered)
		}
	}
	return live, true
}

// connectedAnywhere reports whether agentID has a live stream on this
// replica or on another live one.
func (s *Server) connectedAnywhere(ctx context.Context, agentID string) (bool, error) {
	if s.hub.state(agentID).connected {
		return true, nil
	}
	if s.fleet == nil {
		return false, nil
	}
	rec, found, err := s.store.agentStream(ctx, agentID)
	if err != nil || !found {
		return false, err
	}
	_, ok := s.remoteStream(rec, nil, nil)
	return ok, nil
}
