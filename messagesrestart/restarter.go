// Package messagesrestart restarts Messages when it hangs, within a bound.
//
// Messages sometimes stops answering while it still runs: AppleScript's
// events time out and the private-API helper inside it leaves requests
// unanswered, typically after a macOS update, an iCloud sync storm or an
// IMCore deadlock. Nothing but a restart brings it back. The Restarter
// watches two signals: osascript runs of sends timing out in a row (from
// applescript.Options.Runs) and helper requests unanswered in a row (the
// bridge's count). When either reaches Signals in a row within Window,
// it waits for the osascript runs in flight to end (a send mid-run is not
// cut short if that can be helped), quits Messages politely, kills it if
// it will not quit, opens it again and waits to see it running. It does
// so at most once per MinInterval and PerHour times an hour; past that it
// stops and health says Messages hangs with the restarts spent, so a
// Mac whose Messages cannot be saved is not restarted in a loop.
package messagesrestart

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/messages/applescript"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Actions are what a restart does to Messages. Mac is the macOS one;
// tests bring their own.
type Actions interface {
	// Running reports whether Messages runs now.
	Running(ctx context.Context) (bool, error)
	// Quit asks Messages to quit; a hung Messages may not.
	Quit(ctx context.Context) error
	// Kill ends Messages at once.
	Kill(ctx context.Context) error
	// Open starts Messages.
	Open(ctx context.Context) error
}

// Defaults for Options.
const (
	DefaultSignals     = 3
	DefaultWindow      = 5 * time.Minute
	DefaultMinInterval = 10 * time.Minute
	DefaultPerHour     = 3
	// DefaultQuitWait is how long Messages gets to quit, then to die
	// after the kill.
	DefaultQuitWait = 10 * time.Second
	// DefaultStartWait is how long Messages gets to run again once opened.
	DefaultStartWait = 30 * time.Second
	// DefaultIdleWait bounds the wait for osascript runs in flight: twice
	// applescript.DefaultTimeout, after which every run has ended anyway.
	DefaultIdleWait = 2 * applescript.DefaultTimeout
	// DefaultPoll is how often the helper's count is read and a blocked
	// restart looked at again.
	DefaultPoll = 5 * time.Second
	// DefaultStep is how often Running is asked while waiting for
	// Messages to go or come.
	DefaultStep = 500 * time.Millisecond
)

// Options configure a Restarter. Zero durations and counts take the
// defaults, except PerHour.
type Options struct {
	// Actions quit, kill, open and look for Messages. Required.
	Actions Actions
	// PerHour is the most restarts in any hour; 0 or less never restarts
	// (the hang is still detected and reported).
	PerHour int
	// MinInterval is the least time between two restarts.
	MinInterval time.Duration
	// Signals in a row, the first and last within Window, mean Messages
	// hangs.
	Signals int
	Window  time.Duration
	// QuitWait, StartWait and IdleWait bound the steps of a restart (see
	// the defaults).
	QuitWait, StartWait, IdleWait time.Duration
	// Poll and Step pace the background loop and the waits.
	Poll, Step time.Duration
	// Unanswered is the helper's count of requests unanswered in a row
	// (bridge.Bridge.Unanswered); nil watches osascript alone.
	Unanswered func() int64
	// Restarted is called after each restart (the "messages" probe's
	// Recheck, so health shows Messages back at once).
	Restarted func()
	// Report, when set, hears each restart once it is over: the agent
	// sends it to the relay as an event.
	Report func(Restart)
	// Now dates signals and restarts and decides the bound; default
	// time.Now.
	Now func() time.Time
	// Logger receives each hang and restart; default discard.
	Logger *slog.Logger
}

// Restarter detects Messages hanging and restarts it within the bound.
// It is an applescript.RunObserver. Safe for concurrent use.
type Restarter struct {
	o    Options
	log  *slog.Logger
	kick chan struct{}

	mu         sync.Mutex
	osa        streak        // guarded by mu; osascript timeouts in a row
	helper     streak        // guarded by mu; helper requests unanswered in a row
	helperSeen int64         // guarded by mu; the helper's count last read
	inflight   int           // guarded by mu; osascript runs of sends now
	idle       chan struct{} // guarded by mu; closed while inflight is 0
	hung       *hang         // guarded by mu; nil while Messages answers
	restarting time.Time     // guarded by mu; when the restart under way began, zero when none is
	history    []time.Time   // guarded by mu; restarts begun in the last hour
	last       *restart      // guarded by mu; the latest restart
}

var _ applescript.RunObserver = (*Restarter)(nil)

// streak is the times of the signals in a row, oldest first.
type streak struct {
	at []time.Time
}

// hang is Messages seen hanging: since when, and why it is thought to.
type hang struct {
	since  time.Time
	reason string
}

// Restart is one finished restart as Report hears it.
type Restart struct {
	// At is when it began; Reason why Messages was taken for hanging;
	// Outcome what the restart did and saw; Running whether Messages was
	// seen running again.
	At              time.Time
	Reason, Outcome string
	Running         bool
}

// restart is one restart: when, why, and how it went.
type restart struct {
	at      time.Time
	reason  string
	outcome string // "" while it runs
}

// New returns a Restarter; Run starts its loop.
func New(o Options) *Restarter {
	if o.Signals <= 0 {
		o.Signals = DefaultSignals
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&o.Window, DefaultWindow}, {&o.MinInterval, DefaultMinInterval}, {&o.QuitWait, DefaultQuitWait},
		{&o.StartWait, DefaultStartWait}, {&o.IdleWait, DefaultIdleWait}, {&o.Poll, DefaultPoll}, {&o.Step, DefaultStep}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	idle := make(chan struct{})
	close(idle)
	return &Restarter{o: o, log: o.Logger, kick: make(chan struct{}, 1), idle: idle}
}

// OsascriptStarted notes a send's osascript run in flight.
func (r *Restarter) OsascriptStarted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight == 0 {
		r.idle = make(chan struct{})
	}
	r.inflight++
}

// OsascriptEnded notes how the run ended: an answer ends the osascript
// streak, a timeout adds to it.
func (r *Restarter) OsascriptEnded(e applescript.RunEnd) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight--; r.inflight == 0 {
		close(r.idle)
	}
	switch e {
	case applescript.RunAnswered:
		r.osa = streak{}
	case applescript.RunTimedOut:
		r.osa.add(r.o.Now(), r.o.Signals)
	}
	r.judgeLocked()
}

// pollHelper reads the helper's count: a rise adds that many signals, a
// fall means it answered (and what is counted now came after).
func (r *Restarter) pollHelper() {
	if r.o.Unanswered == nil {
		return
	}
	n := r.o.Unanswered()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := r.helperSeen
	r.helperSeen = n
	if n < seen {
		r.helper, seen = streak{}, 0
	}
	now := r.o.Now()
	for range min(n-seen, int64(r.o.Signals)) {
		r.helper.add(now, r.o.Signals)
	}
	r.judgeLocked()
}

func (s *streak) add(t time.Time, keep int) {
	s.at = append(s.at, t)
	if len(s.at) > keep {
		s.at = s.at[len(s.at)-keep:]
	}
}

// tripped: n signals in a row, the first and last within window.
func (s streak) tripped(n int, window time.Duration) bool {
	return len(s.at) >= n && s.at[len(s.at)-1].Sub(s.at[len(s.at)-n]) <= window
}

// judgeLocked turns the streaks into the hang: seen when one trips, over
// when neither does any more (Messages answered). r.mu must be held.
func (r *Restarter) judgeLocked() {
	var reason string
	switch {
	case r.osa.tripped(r.o.Signals, r.o.Window):
		reason = fmt.Sprintf("%d osascript runs in a row timed out, the last at %s", len(r.osa.at), stamp(r.osa.at[len(r.osa.at)-1]))
	case r.helper.tripped(r.o.Signals, r.o.Window):
		reason = fmt.Sprintf("%d private-API helper requests in a row went unanswered", r.helperSeen)
	}
	switch {
	case reason != "" && r.hung == nil:
		r.hung = &hang{since: r.o.Now(), reason: reason}
		r.log.Warn("Messages is hanging", "reason", reason)
		select {
		case r.kick <- struct{}{}:
		default:
		}
	case reason == "" && r.hung != nil && r.restarting.IsZero():
		r.log.Info("Messages answers again", "hung_since", stamp(r.hung.since))
		r.hung = nil
	}
}

// Run restarts Messages whenever it hangs and the bound allows, until
// ctx ends.
func (r *Restarter) Run(ctx context.Context) {
	t := time.NewTicker(r.o.Poll)
	defer t.Stop()
	for {
		r.tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

// tick reads the helper's count and restarts Messages if it is due.
func (r *Restarter) tick(ctx context.Context) {
	r.pollHelper()
	if r.due() {
		r.restart(ctx)
	}
}

// due says whether a restart should begin now; when it should, it is
// marked under way.
func (r *Restarter) due() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	if r.hung == nil || !r.restarting.IsZero() || r.o.PerHour <= 0 || !r.allowedLocked(now).IsZero() {
		return false
	}
	r.restarting = now
	return true
}

// allowedLocked is zero when a restart may begin at now, else when the
// next may. r.mu must be held.
func (r *Restarter) allowedLocked(now time.Time) time.Time {
	r.pruneLocked(now)
	var next time.Time
	if len(r.history) >= r.o.PerHour {
		next = r.history[len(r.history)-r.o.PerHour].Add(time.Hour)
	}
	if r.last != nil {
		if t := r.last.at.Add(r.o.MinInterval); t.After(next) {
			next = t
		}
	}
	if !next.After(now) {
		return time.Time{}
	}
	return next
}

func (r *Restarter) pruneLocked(now time.Time) {
	i := 0
	for i < len(r.history) && !r.history[i].Add(time.Hour).After(now) {
		i++
	}
	r.history = r.history[i:]
}

// restart waits for the osascript runs in flight; if Messages is still
// hanging then, it is recorded (it counts against the bound from then
// on), Messages is quit (or killed) and reopened, and how it went is
// recorded.
func (r *Restarter) restart(ctx context.Context) {
	r.mu.Lock()
	idle, inflight := r.idle, r.inflight
	r.mu.Unlock()
	if inflight > 0 {
		r.log.InfoContext(ctx, "Messages is hanging; waiting for the osascript runs in flight before restarting it", "osascript_in_flight", inflight)
	}
	wait, cancel := context.WithTimeout(ctx, r.o.IdleWait)
	select {
	case <-idle:
	case <-wait.Done():
		if ctx.Err() == nil {
			r.log.WarnContext(ctx, "osascript runs are still in flight; restarting Messages anyway (chat.db settles their sends)", "waited", r.o.IdleWait)
		}
	}
	cancel()
	r.mu.Lock()
	if !r.osa.tripped(r.o.Signals, r.o.Window) && !r.helper.tripped(r.o.Signals, r.o.Window) {
		r.restarting, r.hung = time.Time{}, nil
		r.mu.Unlock()
		r.log.InfoContext(ctx, "Messages answered while the restart waited; not restarting it")
		return
	}
	start := r.o.Now()
	r.history = append(r.history, start)
	r.last = &restart{at: start, reason: r.hung.reason}
	reason, n := r.hung.reason, len(r.history)
	r.mu.Unlock()
	r.log.WarnContext(ctx, "restarting Messages", "reason", reason, "restarts_last_hour", n)
	outcome, ok := r.cycle(ctx)
	if ok {
		outcome += fmt.Sprintf(", running again %s later", r.o.Now().Sub(start).Round(time.Second))
	}
	r.mu.Lock()
	r.restarting = time.Time{}
	r.last.outcome = outcome
	r.osa, r.helper, r.hung = streak{}, streak{}, nil
	r.mu.Unlock()
	if ok {
		r.log.InfoContext(ctx, "Messages restarted", "outcome", outcome)
	} else {
		r.log.ErrorContext(ctx, "restarting Messages failed", "outcome", outcome)
	}
	if r.o.Restarted != nil {
		r.o.Restarted()
	}
	if r.o.Report != nil {
		r.o.Report(Restart{At: start, Reason: reason, Outcome: outcome, Running: ok})
	}
}

// cycle quits Messages (killing it if it will not go) and opens it,
// saying what happened and whether it runs again.
func (r *Restarter) cycle(ctx context.Context) (string, bool) {
	a := r.o.Actions
	how := "reopened"
	if running, _ := a.Running(ctx); running {
		qctx, cancel := context.WithTimeout(ctx, r.o.QuitWait)
		qerr := a.Quit(qctx)
		cancel()
		how = "quit and reopened"
		if !r.waitRunning(ctx, false, r.o.QuitWait) {
			if err := a.Kill(ctx); err != nil {
				return fmt.Sprintf("Messages did not quit within %s (%v) and killing it failed: %v", r.o.QuitWait, qerr, err), false
			}
			if !r.waitRunning(ctx, false, r.o.QuitWait) {
				return fmt.Sprintf("Messages did not quit within %s and was still running %s after it was killed", r.o.QuitWait, r.o.QuitWait), false
			}
			how = fmt.Sprintf("killed (it did not quit within %s) and reopened", r.o.QuitWait)
		}
	}
	if err := a.Open(ctx); err != nil {
		return "opening Messages again failed: " + err.Error(), false
	}
	if !r.waitRunning(ctx, true, r.o.StartWait) {
		return fmt.Sprintf("%s, but Messages was not running %s later", how, r.o.StartWait), false
	}
	return how, true
}

// waitRunning asks every Step whether Messages runs until the answer is
// want or within has passed.
func (r *Restarter) waitRunning(ctx context.Context, want bool, within time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	t := time.NewTicker(r.o.Step)
	defer t.Stop()
	for {
		if running, err := r.o.Actions.Running(ctx); err == nil && running == want {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Component is the "messages" component as base (the running probe)
// reports it, with what the Restarter knows: DOWN while Messages hangs
// and no restart may come, DEGRADED while one runs or is about to, and
// the restarts of the last hour in the detail.
//
// The detail is the Restarter's, then base's, then the restarts, and the
// fixes come last, together (the Restarter's first, as its detail is):
// "...; fix: A; then B" (component.Joined), so a reader that splits at the
// first "; fix: " gets every detail and every fix; Fix holds the same
// fixes on their own.
func (r *Restarter) Component(base *linev1.HealthComponent) *linev1.HealthComponent {
	out := proto.Clone(base).(*linev1.HealthComponent)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	c, since := r.checkLocked(now)
	if c.Status > out.GetStatus() {
		out.Status, out.Since = c.Status, timestamppb.New(since)
	}
	parts := []component.Check{c, component.Reported(base, false)}
	if r.last != nil && now.Sub(r.last.at) < time.Hour {
		outcome := r.last.outcome
		if outcome == "" {
			outcome = "under way"
		}
		times := fmt.Sprintf("%d times", len(r.history))
		if len(r.history) == 1 {
			times = "once"
		}
		parts = append(parts, component.Check{Detail: fmt.Sprintf("Messages restarted %s in the last hour, the last at %s because %s: %s",
			times, stamp(r.last.at), r.last.reason, outcome)})
	}
	out.Detail, out.Fix = component.Joined("; ", parts...)
	return out
}

// checkLocked is the Restarter's own verdict and since when it holds;
// an OK verdict has no detail. r.mu must be held.
func (r *Restarter) checkLocked(now time.Time) (component.Check, time.Time) {
	const fix = "restart the Mac; if Messages keeps hanging, look at what it logs in Console (Applications > Utilities > Console, search Messages and imagent)"
	switch {
	case r.hung == nil:
		return component.OK(""), now
	case !r.restarting.IsZero():
		return component.Degraded("restarting Messages, which hangs: "+r.hung.reason, ""), r.restarting
	case r.o.PerHour <= 0:
		return component.Down("Messages is hanging ("+r.hung.reason+") and automatic restarts are off (LINE_AGENT_MESSAGES_RESTARTS_PER_HOUR=0)",
			"quit and reopen Messages; "+fix), r.hung.since
	}
	next := r.allowedLocked(now)
	if next.IsZero() {
		return component.Degraded("Messages is hanging ("+r.hung.reason+"); restarting it", ""), r.hung.since
	}
	return component.Down(fmt.Sprintf("Messages is hanging (%s) and its automatic restarts are spent (%d in the last hour, at most %d an hour and one every %s); the next is allowed at %s",
		r.hung.reason, len(r.history), r.o.PerHour, r.o.MinInterval, stamp(next)), fix), r.hung.since
}

// stamp is how times read in health and logs: UTC, to the second.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
