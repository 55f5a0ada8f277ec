// Package icloud follows a chat background's asset through iCloud until it is
// distributable, and reports the Mac's iCloud account as a health component.
//
// A background command may be acknowledged only once its asset is
// distributable. The Tracker decides that from evidence in chat.db, never
// from what the helper says: the chat's properties carry
// backgroundProperties for the new asset (a new trabaid with a locator, key
// and signature) and a background-set row (item_type 3, group_action_type 4)
// dated at or after the start exists. The helper's progress notifications
// (Observe) only move the state between Staged and Uploading, or to Failed.
// See docs/backgrounds.md.
package icloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
)

// Phase is where an asset is on its way to distribution.
type Phase int

const (
	// Staged: the image is ready and the set was (or is about to be)
	// requested; nothing was uploaded yet.
	Staged Phase = iota
	// Uploading: progress was reported (Done of Total bytes), or partial
	// evidence was seen.
	Uploading
	// Distributable: chat.db shows the new asset and the set row. Terminal.
	Distributable
	// Failed: the upload failed (Reason). Terminal.
	Failed
)

func (p Phase) String() string {
	switch p {
	case Staged:
		return "staged"
	case Uploading:
		return "uploading"
	case Distributable:
		return "distributable"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("phase(%d)", int(p))
}

// Terminal reports whether no further change can follow.
func (p Phase) Terminal() bool { return p == Distributable || p == Failed }

// State is what is known about the asset.
type State struct {
	Phase Phase `json:"phase"`
	// Done and Total are the last upload progress reported, in bytes.
	Done  int64 `json:"done,omitempty"`
	Total int64 `json:"total,omitempty"`
	// AssetID is the distributable asset's trabaid (or the expected one).
	AssetID string `json:"assetId,omitempty"`
	// Reason says why the upload failed.
	Reason string `json:"reason,omitempty"`
	// Evidence says what chat.db showed at the last look ("no
	// backgroundProperties", "properties show the old asset", ...).
	Evidence string `json:"evidence,omitempty"`
	// At is when the state last changed.
	At time.Time `json:"at"`
}

// String describes s in one line, with nothing secret in it.
func (s State) String() string {
	out := s.Phase.String()
	switch s.Phase {
	case Uploading:
		if s.Total > 0 {
			out += fmt.Sprintf(" %d/%d bytes", s.Done, s.Total)
		}
	case Distributable:
		out += " asset " + s.AssetID
	case Failed:
		out += ": " + s.Reason
	}
	if s.Evidence != "" && s.Phase != Distributable {
		out += " (" + s.Evidence + ")"
	}
	return out
}

// same reports whether two states would look the same to the relay.
func (s State) same(o State) bool {
	return s.Phase == o.Phase && s.Done == o.Done && s.Total == o.Total &&
		s.AssetID == o.AssetID && s.Reason == o.Reason && s.Evidence == o.Evidence
}

// Evidence is what the Tracker reads from chat.db. *chatdb.Reader satisfies
// it.
type Evidence interface {
	ChatBackground(ctx context.Context, chatGUID string) (chatdb.Background, error)
	BackgroundRow(ctx context.Context, chatGUID string, since time.Time) (chatdb.BackgroundRow, error)
}

var _ Evidence = (*chatdb.Reader)(nil)

// Progress is a notification about the upload, as the helper sends it
// ("background-transfer-progress"): the agent translates each one and hands
// it to Observe.
type Progress struct {
	// Stage is the helper's stage: "staged", "uploading", "failed"; any
	// other value is treated as "uploading". A stage claiming the upload
	// is complete ("uploaded", "distributable") is only progress: success
	// needs the evidence.
	Stage string
	Done  int64
	Total int64
	// AssetID is the asset's trabaid when the helper names it; it becomes
	// the expected asset when none was given.
	AssetID string
	// Reason explains a "failed" stage.
	Reason string
}

// Spec names the asset to follow.
type Spec struct {
	ChatGUID string
	// AssetID is the expected trabaid; empty means "a new asset, different
	// from the chat's background at Start".
	AssetID string
}

// Options tune a Tracker. The zero value is usable.
type Options struct {
	// Poll is how often chat.db is read while waiting; 0 means 500ms. A
	// progress notification also triggers a read.
	Poll time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// After waits on the clock; nil means time.After.
	After func(time.Duration) <-chan time.Time
	// Slack is subtracted from the start time when looking for the set
	// row, in case Messages dates it a little early; 0 means none.
	Slack time.Duration
	// Logger receives evidence read errors; nil means slog.Default().
	Logger *slog.Logger
}

// ErrFailed is wrapped by the error of a Wait whose upload failed.
var ErrFailed = errors.New("icloud: background upload failed")

// NotDistributableError is returned by Wait when the asset did not become
// distributable: the upload failed (Cause wraps ErrFailed) or the context
// ended first (Cause is its error). State is the last state seen; the agent
// reports it with NOT_DISTRIBUTABLE.
type NotDistributableError struct {
	State State
	Cause error
}

func (e *NotDistributableError) Error() string {
	return fmt.Sprintf("icloud: background not distributable: %v; last state: %s", e.Cause, e.State)
}

func (e *NotDistributableError) Unwrap() error { return e.Cause }

// Tracker follows one asset. Its methods are safe for concurrent use: the
// agent calls Observe from its event loop while Wait runs in the command.
type Tracker struct {
	ev   Evidence
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	chat     string
	expected string    // trabaid to wait for, "" = any new one
	prev     string    // trabaid at Start
	since    time.Time // the start
	state    State
	wake     chan struct{} // buffered 1: a notification arrived
	resumed  bool
	reported State
}

// Start begins tracking: it records the start time and the chat's current
// background, so that only a newer asset counts. Call it before asking the
// helper to set the background.
func Start(ctx context.Context, ev Evidence, spec Spec, opts Options) (*Tracker, error) {
	if spec.ChatGUID == "" {
		return nil, errors.New("icloud: a chat GUID is needed")
	}
	t := newTracker(ev, opts)
	before, err := ev.ChatBackground(ctx, spec.ChatGUID)
	if err != nil {
		return nil, fmt.Errorf("icloud: read background of %s: %w", spec.ChatGUID, err)
	}
	t.chat, t.expected, t.since = spec.ChatGUID, spec.AssetID, t.opts.Now()
	if before.Set {
		t.prev = before.AssetID
	}
	if t.expected != "" && t.expected == t.prev {
		return nil, fmt.Errorf("icloud: asset %s is already the chat's background", t.expected)
	}
	t.state = State{Phase: Staged, AssetID: t.expected, At: t.since}
	return t, nil
}

func newTracker(ev Evidence, opts Options) *Tracker {
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Tracker{ev: ev, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
}

// snapshot is the persisted form; it holds no key, signature or locator.
type snapshot struct {
	V        int       `json:"v"`
	Chat     string    `json:"chat"`
	Expected string    `json:"expected,omitempty"`
	Prev     string    `json:"prev,omitempty"`
	Since    time.Time `json:"since"`
	State    State     `json:"state"`
}

// Snapshot is the Tracker's state to journal with its command, so that after
// an agent restart Resume continues tracking without uploading again. It
// contains no secret.
func (t *Tracker) Snapshot() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, _ := json.Marshal(snapshot{V: 1, Chat: t.chat, Expected: t.expected, Prev: t.prev, Since: t.since, State: t.state})
	return b
}

// Resume rebuilds a Tracker from a Snapshot taken before a restart. The
// upload is not requested again: Messages carries on with it (or finished it
// meanwhile), and the evidence decides.
func Resume(ev Evidence, snap []byte, opts Options) (*Tracker, error) {
	var s snapshot
	if err := json.Unmarshal(snap, &s); err != nil {
		return nil, fmt.Errorf("icloud: resume: %w", err)
	}
	if s.V != 1 || s.Chat == "" || s.Since.IsZero() {
		return nil, fmt.Errorf("icloud: resume: unusable snapshot (version %d)", s.V)
	}
	t := newTracker(ev, opts)
	t.chat, t.expected, t.prev, t.since, t.state = s.Chat, s.Expected, s.Prev, s.Since, s.State
	t.resumed = true
	return t, nil
}

// ChatGUID is the chat whose background is tracked.
func (t *Tracker) ChatGUID() string { return t.chat }

// State is the current state.
func (t *Tracker) State() State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state
}

// Observe feeds a progress notification. It never makes the asset
// distributable: only the evidence does. It is ignored once the state is
// terminal.
func (t *Tracker) Observe(p Progress) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state.Phase.Terminal() {
		return
	}
	if p.AssetID != "" && t.expected == "" && p.AssetID != t.prev {
		t.expected = p.AssetID
		t.state.AssetID = p.AssetID
	}
	next := t.state
	switch p.Stage {
	case "staged":
		if next.Phase != Staged {
			return // a late notification does not move back
		}
	case "failed":
		next.Phase = Failed
		next.Reason = p.Reason
		if next.Reason == "" {
			next.Reason = "the helper reported a failed upload"
		}
	default:
		next.Phase = Uploading
		if p.Total > 0 && (p.Total != next.Total || p.Done >= next.Done) {
			next.Done, next.Total = p.Done, p.Total
		}
	}
	t.setLocked(next)
}

// Fail marks the upload failed with reason, for a helper call that returned
// an error. It is ignored once the state is terminal.
func (t *Tracker) Fail(reason string) { t.Observe(Progress{Stage: "failed", Reason: reason}) }

// setLocked changes the state and wakes Wait.
func (t *Tracker) setLocked(next State) {
	if next.same(t.state) {
		return
	}
	next.At = t.opts.Now()
	t.state = next
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Check reads the evidence once and updates the state: Distributable when
// the properties carry the new asset complete and the set row exists.
func (t *Tracker) Check(ctx context.Context) (State, error) {
	t.mu.Lock()
	if t.state.Phase.Terminal() {
		s := t.state
		t.mu.Unlock()
		return s, nil
	}
	chat, expected, prev, since := t.chat, t.expected, t.prev, t.since.Add(-t.opts.Slack)
	t.mu.Unlock()

	bg, err := t.ev.ChatBackground(ctx, chat)
	if err != nil {
		return t.State(), fmt.Errorf("icloud: read background: %w", err)
	}
	evidence := ""
	newAsset := false
	switch {
	case !bg.Set:
		evidence = "properties have no backgroundProperties"
	case expected != "" && bg.AssetID != expected:
		evidence = "properties show another asset"
	case expected == "" && bg.AssetID == prev:
		evidence = "properties show the previous asset"
	case !bg.Complete():
		newAsset = true
		evidence = "properties lack the asset's locator, key or signature"
	default:
		newAsset = true
	}
	var row chatdb.BackgroundRow
	rowOK := false
	if evidence == "" {
		row, err = t.ev.BackgroundRow(ctx, chat, since)
		switch {
		case errors.Is(err, chatdb.ErrNotFound):
			evidence = "no background-set row yet"
		case err != nil:
			return t.State(), fmt.Errorf("icloud: read background row: %w", err)
		case row.Removed:
			evidence = "the latest background row is a removal"
		default:
			rowOK = true
		}
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state.Phase.Terminal() {
		return t.state, nil
	}
	next := t.state
	next.Evidence = evidence
	if newAsset && rowOK {
		next = State{Phase: Distributable, AssetID: bg.AssetID, Done: bg.Size, Total: bg.Size, Evidence: "properties and set row " + row.GUID}
	} else if newAsset && next.Phase == Staged {
		next.Phase = Uploading // Messages is writing: the asset exists
	}
	t.setLocked(next)
	return t.state, nil
}

// Wait returns once the asset is distributable, with its state. Otherwise it
// returns the last state and a *NotDistributableError: at once when the
// upload failed, or when ctx ends (the command's deadline, 120 s by
// default). report (which may be nil) is called with every new state, from
// Wait's goroutine, so the agent can send CommandUpdate frames and journal
// Snapshot. A resumed Tracker reports its state first.
func (t *Tracker) Wait(ctx context.Context, report func(State)) (State, error) {
	if report == nil {
		report = func(State) {}
	}
	t.mu.Lock()
	if t.resumed {
		t.reported = State{Phase: -1}
	} else {
		t.reported = t.state
	}
	t.mu.Unlock()
	emit := func() State {
		t.mu.Lock()
		s := t.state
		changed := !s.same(t.reported)
		t.reported = s
		t.mu.Unlock()
		if changed {
			report(s)
		}
		return s
	}
	for {
		if _, err := t.Check(ctx); err != nil && ctx.Err() == nil {
			t.log.WarnContext(ctx, "icloud: reading background evidence failed", "chat", t.chat, "err", err)
		}
		s := emit()
		switch s.Phase {
		case Distributable:
			return s, nil
		case Failed:
			return s, &NotDistributableError{State: s, Cause: fmt.Errorf("%w: %s", ErrFailed, s.Reason)}
		}
		select {
		case <-ctx.Done():
			s = emit()
			return s, &NotDistributableError{State: s, Cause: ctx.Err()}
		case <-t.wake:
		case <-t.opts.After(t.opts.Poll):
		}
	}
}
