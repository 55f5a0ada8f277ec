package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A platform API write returns only with its command's final state: the
// SDK resolves the app's promise when the call returns (a background's
// "distributable" hook among them) and sets no deadline of its own.

// idempotencyKeyHeader is the metadata spectrum-ts puts on every write, a
// fresh UUID per call.
const idempotencyKeyHeader = "x-idempotency-key"

// apiWaitSlack is how long after a command's deadline plus ResultGrace a
// call still waits. The sweeper settles every command within about a
// second of that moment, and its final state wakes the call; the slack
// only bounds a call whose wake-up was somehow missed.
const apiWaitSlack = 5 * time.Second

// apiCommandID is the command id of a write: the caller's idempotency key
// (client_message_id when set, else the x-idempotency-key metadata)
// scoped to the token, so a repeated key is the same command and two
// tokens' keys never meet. A key that would make the id longer than
// command.MaxIDBytes is replaced by its SHA-256; a call without a key gets
// a fresh id. It returns the key too ("" when there was none).
func apiCommandID(ctx context.Context, tokenID string, clientMessageID *string) (id, key string) {
	if clientMessageID != nil && *clientMessageID != "" {
		key = *clientMessageID
	} else if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(idempotencyKeyHeader); len(v) > 0 {
			key = v[0]
		}
	}
	prefix := "api:" + tokenID + ":"
	switch {
	case key == "":
		return prefix + "new:" + newAgentID()[len(agentIDPrefix):], ""
	case len(prefix)+len("key:")+len(key) <= command.MaxIDBytes:
		return prefix + "key:" + key, key
	}
	sum := sha256.Sum256([]byte(key))
	return prefix + "sha256:" + hex.EncodeToString(sum[:]), key
}

// commandWaiters wakes the calls waiting for a command's final state. The
// result path (resultJob) and the sweeper call finished once the final
// state is committed; a waiter registers (watch) before the command can
// finish unseen: before it submits the command, or before it reads the
// row, so a result stored meanwhile still wakes it. The zero value is
// ready to use.
type commandWaiters struct {
	mu sync.Mutex
	m  map[string]*commandWait // guarded by mu
}

// commandWait is one command's wake-up, shared by its waiters.
type commandWait struct {
	ch chan struct{} // closed by finished
	// final is the row as its final state was committed, when the one who
	// finished it had it (the result path has it; the sweeper does not):
	// the woken calls answer from it instead of reading it back. Final
	// rows never change, so it is what a read would return. Set before
	// ch is closed; read-only after.
	final *commandRow
	n     int // waiters holding it; guarded by commandWaiters.mu
}

// row is the final row carried by the wake-up, or nil (read it). Each
// waiter gets its own copy, so none can change another's answer.
func (cw *commandWait) row() *commandRow {
	if cw.final == nil {
		return nil
	}
	r := *cw.final
	return &r
}

// watch returns id's next wake-up and the release the waiter must call
// when it stops waiting.
func (w *commandWaiters) watch(id string) (*commandWait, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]*commandWait{}
	}
	cw := w.m[id]
	if cw == nil {
		cw = &commandWait{ch: make(chan struct{})}
		w.m[id] = cw
	}
	cw.n++
	var once sync.Once
	return cw, func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if cw.n--; cw.n == 0 && w.m[id] == cw {
				delete(w.m, id)
			}
		})
	}
}

// finished wakes every call waiting for id, handing them final (the row
// as committed, or nil when the caller has none). Cheap when nobody waits.
func (w *commandWaiters) finished(id string, final *commandRow) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cw := w.m[id]; cw != nil {
		cw.final = final
		close(cw.ch)
		delete(w.m, id)
	}
}

// watching lists the command ids someone waits for, so a replica's poll
// can look for final states another replica committed (replica.go).
func (w *commandWaiters) watching() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.m))
	for id := range w.m {
		ids = append(ids, id)
	}
	return ids
}

// wakeAll wakes every waiting call to read its command again: another
// replica's final states may have gone unannounced.
func (w *commandWaiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, cw := range w.m {
		close(cw.ch)
		delete(w.m, id)
	}
}

// waitEnd is why awaitCommand stopped waiting.
type waitEnd int

const (
	waitFinal    waitEnd = iota // the command is succeeded or failed
	waitBound                   // the relay's own bound passed
	waitCaller                  // the caller's deadline passed or it cancelled
	waitShutdown                // the relay is closing
)

// awaitCommand returns command id's row once it is final, or the last row
// seen and why it stopped waiting first. The caller holds wake (and its
// release), watched before the command could finish unseen; with queued
// set, it watched before it created the command, whose deadline that is,
// so there is nothing to read yet. Otherwise (a repeated key: the command
// may be final already) the row is read first. It is read again only
// when a wake-up carries no final row (the sweeper's), never in a loop of
// its own. The caller going away ends the wait, never the command.
func (s *Server) awaitCommand(ctx context.Context, id string, wake *commandWait, release func(), queued time.Time) (*commandRow, waitEnd, error) {
	var (
		last  *commandRow
		bound *time.Timer
	)
	defer func() {
		release()
		if bound != nil {
			bound.Stop()
		}
	}()
	// lastSeen reads the row once more when the wait ends early: the
	// command moved on (dispatched, accepted) without waking anyone.
	lastSeen := func() *commandRow {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), time.Second)
		defer cancel()
		if r, err := s.store.command(rctx, id); err == nil && r != nil {
			return r
		}
		return last
	}
	deadline, read := queued, queued.IsZero()
	if !read {
		// What the call itself stored, should every later read fail.
		last = &commandRow{id: id, state: stateQueued, deadline: queued}
	}
	for {
		if read {
			r, err := s.store.command(s.ctx, id)
			switch {
			case s.ctx.Err() != nil:
				return lastSeen(), waitShutdown, nil
			case err != nil:
				return last, waitFinal, err
			case r == nil:
				return last, waitFinal, fmt.Errorf("command %q is not stored", id)
			}
			last, deadline = r, r.deadline
			if r.state == stateSucceeded || r.state == stateFailed {
				return r, waitFinal, nil
			}
		}
		if bound == nil {
			bound = time.NewTimer(deadline.Add(s.opts.ResultGrace + apiWaitSlack).Sub(s.now()))
		}
		select {
		case <-wake.ch:
			if r := wake.row(); r != nil {
				return r, waitFinal, nil
			}
		case <-bound.C:
			return lastSeen(), waitBound, nil
		case <-ctx.Done():
			return lastSeen(), waitCaller, nil
		case <-s.ctx.Done():
			return lastSeen(), waitShutdown, nil
		}
		release()
		wake, release = s.cmdDone.watch(id)
		read = true
	}
}

// lastState describes an unfinished command for a caller: its state, and
// the stage of the agent's last progress report ("in_progress (uploading
// 524288/1048576)").
func lastState(r *commandRow) string {
	if r == nil {
		return ""
	}
	p := &linev1.Progress{}
	if len(r.progress) == 0 || proto.Unmarshal(r.progress, p) != nil || p.GetStage() == "" {
		return r.state
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s", r.state, p.GetStage())
	if p.GetTotal() > 0 {
		fmt.Fprintf(&b, " %d/%d", p.GetDone(), p.GetTotal())
	}
	b.WriteByte(')')
	return b.String()
}
