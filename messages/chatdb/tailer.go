package chatdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/line-agent/line-agent/pkg/wallclock"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Sink receives the events of chat.db. Commit stores events and cursor
// atomically (the agent writes both in one transaction); the Tailer adopts
// cursor as its position only when Commit returns nil, and otherwise offers
// the same changes again. Commit may block to apply backpressure: the
// Tailer reads nothing more meanwhile, and chat.db keeps the backlog.
// events may be empty when only the cursor moved.
type Sink interface {
	Commit(ctx context.Context, events []*linev1.Event, cursor []byte) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, events []*linev1.Event, cursor []byte) error

// Commit calls f.
func (f SinkFunc) Commit(ctx context.Context, events []*linev1.Event, cursor []byte) error {
	return f(ctx, events, cursor)
}

// TailerOptions configure a Tailer. Zero values take the defaults named.
type TailerOptions struct {
	// Path is chat.db (~/Library/Messages/chat.db on a Mac).
	Path string
	// Clock dates events that have no date of their own and decides what is
	// history and what is in the update window; default time.Now.
	Clock func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
	// BackstopInterval is how often PRAGMA data_version is checked whatever
	// the watcher says (default 1s): the bound on latency when file events
	// are lost.
	BackstopInterval time.Duration
	// BatchSize bounds the rows read per step and so per Commit (default
	// 1000).
	BatchSize int
	// WindowAge and WindowRows bound the recent rows whose in-place updates
	// (delivered, read, edited, unsent, failed) are tracked: rows dated
	// within WindowAge, at most WindowRows of them (defaults 48h and 4000).
	// Updates to older rows are not reported.
	WindowAge  time.Duration
	WindowRows int
	// WindowInterval is the least time between two reads of that window
	// while commits keep coming (default 25ms; negative: on every commit).
	// Reading it is most of a step's cost; a commit within the interval of
	// the last read has its new rows read at once and its in-place updates
	// at most this much later, so a burst of commits costs one read of the
	// window, not one per commit. An isolated commit is read in full at once.
	WindowInterval time.Duration
	// HistoricalAge: a new row dated more than this before the newest row
	// seen (or now, if earlier) is history, such as rows synced from iCloud,
	// and its events carry historical=true (default 1h).
	HistoricalAge time.Duration
	// SkipHistorical drops history instead of emitting it flagged.
	SkipHistorical bool
	// DisableWatcher turns file events off, leaving only the backstop (for
	// tests, and for file systems without notifications).
	DisableWatcher bool
	// MaxRecheck is the longest pause of the re-look sequence after a file
	// event that showed nothing new (1, 2, 4 ... ms up to it; default 64ms):
	// a WAL write can be seen before its commit is.
	MaxRecheck time.Duration
	// DedupeKeys is how many recently committed event keys are remembered
	// to drop repeats (default 20,000).
	DedupeKeys int
	// Reader options: the fallback line and the home directory for
	// attachment paths.
	Line string
	Home string
}

func (o *TailerOptions) defaults() {
	if o.Clock == nil {
		o.Clock = wallclock.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.BackstopInterval <= 0 {
		o.BackstopInterval = time.Second
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.WindowAge <= 0 {
		o.WindowAge = 48 * time.Hour
	}
	if o.WindowRows <= 0 {
		o.WindowRows = 4000
	}
	if o.WindowInterval == 0 {
		o.WindowInterval = 25 * time.Millisecond
	}
	if o.HistoricalAge <= 0 {
		o.HistoricalAge = time.Hour
	}
	if o.MaxRecheck <= 0 {
		o.MaxRecheck = 64 * time.Millisecond
	}
	if o.DedupeKeys <= 0 {
		o.DedupeKeys = 20_000
	}
}

// Tailer follows chat.db and hands every change to a Sink as events, in
// bounded batches, exactly once per stored cursor.
type Tailer struct {
	opts TailerOptions
	log  *slog.Logger

	running atomic.Bool
	hmu     sync.Mutex
	h       healthState

	// Owned by the Run goroutine.
	r     *Reader
	sc    *scanner
	cur   *cursor
	keys  *keySet
	force atomic.Bool
}

// NewTailer returns a Tailer for opts.Path; Run starts it.
func NewTailer(opts TailerOptions) *Tailer {
	opts.defaults()
	t := &Tailer{opts: opts, log: opts.Logger.With("component", "chatdb")}
	t.h.init(opts.Clock(), !opts.DisableWatcher)
	return t
}

// Run follows chat.db until ctx is done, calling sink.Commit with each batch
// of events and the cursor after it. start is a cursor from an earlier
// Commit; nil starts from now: rows already in chat.db are not reported,
// only changes after startup (the baseline is committed at once, with no
// events, so a restart before the first change loses nothing). Run returns
// ctx's error when ctx ends, or an error when start is not a cursor this
// version understands. Everything else (chat.db missing, queries or commits
// failing) is retried and reported through Health.
func (t *Tailer) Run(ctx context.Context, start []byte, sink Sink) error {
	if !t.running.CompareAndSwap(false, true) {
		return errors.New("chatdb: tailer already running")
	}
	defer t.running.Store(false)
	t.cur = nil
	if start != nil {
		c, err := parseCursor(start)
		if err != nil {
			return err
		}
		t.cur = c
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if err := t.open(ctx); err != nil {
		return err
	}
	defer t.r.Close()
	t.keys = newKeySet(t.opts.DedupeKeys)

	wake := make(chan struct{}, 1)
	signal := func(files bool) {
		if files {
			t.force.Store(true)
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if !t.opts.DisableWatcher {
		w := newWatcher(t.opts.Path, signal, t.h.watcher(&t.hmu, t.opts.Clock), t.log)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}

	if t.cur == nil {
		for {
			if err := t.baseline(ctx, sink); err == nil {
				break
			} else if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := sleep(ctx, t.opts.BackstopInterval); err != nil {
				return err
			}
		}
	}

	backstop := time.NewTicker(t.opts.BackstopInterval)
	defer backstop.Stop()
	recheck := time.NewTimer(0) // an initial scan catches up from start
	recheckDelay := time.Duration(0)
	failDelay := 10 * time.Millisecond

	// after decides what follows a scan: on failure retry with growing
	// delay; after a file event that showed nothing, look again 1, 2, 4...
	// ms later; after a scan that found something, wait for the next event.
	after := func(found bool, err error, fromEvent bool) {
		switch {
		case err != nil:
			t.force.Store(true)
			recheck.Reset(failDelay)
			failDelay = min(failDelay*2, 5*time.Second)
			recheckDelay = 0
		case found:
			failDelay = 10 * time.Millisecond
			recheckDelay = 0
			recheck.Stop()
		case fromEvent:
			failDelay = 10 * time.Millisecond
			if recheckDelay == 0 {
				recheckDelay = time.Millisecond
			} else {
				recheckDelay *= 2
			}
			if recheckDelay <= t.opts.MaxRecheck {
				recheck.Reset(recheckDelay)
			} else {
				recheckDelay = 0
			}
		}
	}

	// window fires when a step left the update window owed (a burst of
	// commits within WindowInterval): the read it skipped happens then,
	// whether or not anything else is committed.
	window := time.NewTimer(0)
	window.Stop()
	scan := func(fromEvent bool) (drained, error) {
		d, err := t.drain(ctx, sink, false)
		after(d.found, err, fromEvent)
		if !d.windowDue.IsZero() {
			window.Reset(max(d.windowDue.Sub(t.sc.cfg.now()), 0))
		}
		return d, err
	}

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
			recheckDelay = 0
			scan(true)
		case <-recheck.C:
			scan(true)
		case <-window.C:
			scan(false)
		case <-backstop.C:
			// A pending file event is the watcher doing its job: serve it
			// first so the backstop only counts what the watcher missed.
			select {
			case <-wake:
				scan(true)
				continue
			default:
			}
			// Only a commit no file event announced counts as missed, not
			// the owed window read of a burst the watcher did announce.
			if d, err := scan(false); err == nil && d.found && d.committed {
				t.h.backstopCaught(&t.hmu, t.opts.Clock())
				t.log.Warn("chatdb: backstop found changes the watcher missed")
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// openOnce opens the Reader and the scanner on it.
func (t *Tailer) openOnce() error {
	r, err := Open(t.opts.Path, Options{Line: t.opts.Line, Home: t.opts.Home, Logger: t.log})
	t.h.opened(&t.hmu, t.opts.Clock(), err)
	if err != nil {
		return err
	}
	t.r = r
	t.sc = &scanner{r: r, conv: &converter{line: t.opts.Line, home: r.opts.Home, clock: t.opts.Clock, log: t.log}, cfg: scanConfig{
		batch: t.opts.BatchSize, windowAge: t.opts.WindowAge, windowRows: t.opts.WindowRows,
		historicalAge: t.opts.HistoricalAge, skipHistorical: t.opts.SkipHistorical, clock: t.opts.Clock,
		windowEvery: max(t.opts.WindowInterval, 0), now: time.Now,
	}}
	return nil
}

// open opens the Reader, retrying until chat.db can be read.
func (t *Tailer) open(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		err := t.openOnce()
		if err == nil {
			return nil
		}
		t.log.Warn("chatdb: cannot open chat.db, retrying", "path", t.opts.Path, "err", err)
		if err := sleep(ctx, delay); err != nil {
			return err
		}
		delay = min(delay*2, t.opts.BackstopInterval*5)
	}
}

// baseline positions a fresh Tailer at "now" and commits that position.
func (t *Tailer) baseline(ctx context.Context, sink Sink) error {
	c, err := t.sc.baseline(ctx)
	if err != nil {
		t.h.scanned(&t.hmu, t.opts.Clock(), err)
		return err
	}
	if err := sink.Commit(ctx, nil, c.marshal()); err != nil {
		t.h.committed(&t.hmu, t.opts.Clock(), 0, err)
		return err
	}
	t.h.committed(&t.hmu, t.opts.Clock(), 0, nil)
	t.cur = c
	return nil
}

// drained is what a drain saw.
type drained struct {
	found bool // a row was read or an event emitted
	// committed: its first step found a commit made since the drain before
	// (or could not tell), as opposed to only a window read that was owed.
	committed bool
	// windowDue, when set, is when a drain must run to read the update
	// window a step left owed (scanner.step), on the scanner's clock.
	windowDue time.Time
}

// drain scans until nothing more is pending, committing each batch. Unless
// forced (file identities changed, the last attempt failed, a one-shot
// read), a step returns at once when no other connection committed since
// the last complete drain (scanner.step's data_version check), and such a
// look counts as no scan.
func (t *Tailer) drain(ctx context.Context, sink Sink, force bool) (d drained, err error) {
	force = t.force.Swap(false) || force
	for first := true; ; first = false {
		res, err := t.sc.step(ctx, t.cur, force)
		if err == nil {
			if first {
				d.committed = res.committed
			}
			d.windowDue = res.windowDue
		}
		if err == nil && res.skipped {
			return d, nil
		}
		t.h.scanned(&t.hmu, t.opts.Clock(), err)
		if err != nil {
			t.log.Warn("chatdb: scan failed", "err", err)
			return d, err
		}
		if res.rebased {
			t.log.Warn("chatdb: chat.db was replaced; re-baselined without re-emitting old rows", "path", t.opts.Path)
			t.h.rebased(&t.hmu, t.opts.Clock())
		}
		if res.changed {
			evs := t.keys.filter(res.events)
			if err := sink.Commit(ctx, evs, res.next.marshal()); err != nil {
				t.h.committed(&t.hmu, t.opts.Clock(), 0, err)
				t.log.Warn("chatdb: commit failed; will offer the same changes again", "err", err)
				if ctx.Err() != nil {
					return d, ctx.Err()
				}
				return d, fmt.Errorf("chatdb: commit: %w", err)
			}
			for _, e := range evs {
				t.keys.add(e.Key)
			}
			t.h.committed(&t.hmu, t.opts.Clock(), len(evs), nil)
			t.cur = res.next
			d.found = d.found || len(evs) > 0 || res.rows > 0
		}
		if !res.more {
			return d, nil
		}
	}
}
