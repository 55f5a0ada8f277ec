package chatdb

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"time"
)

// StepMode says which step a ScanStepper takes.
type StepMode int

const (
	// StepBaseline is the step as it was before the incremental one: forced
	// every time (no data_version check) and reading the window row by row
	// (legacyWindow). The benchmark measures the others against it.
	StepBaseline StepMode = iota
	// StepIsolated is the Tailer's step for a commit that comes alone (more
	// than WindowInterval after the last read of the window): on a commit it
	// reads the new rows and the window.
	StepIsolated
	// StepInBurst is the Tailer's step for a commit within WindowInterval of
	// the last read of the window: the new rows only, the window left owed.
	StepInBurst
)

// StepperOptions configure a ScanStepper for the tests.
type StepperOptions struct {
	Mode StepMode
	// WindowEvery, when set, replaces the mode's WindowInterval, and Now
	// the clock it is measured on.
	WindowEvery time.Duration
	Now         func() time.Time
	// BeforeWindow runs inside a step's read transaction right before the
	// window is read: a test commits there what the step's snapshot must not
	// see.
	BeforeWindow func()
	// BatchSize bounds the rows of a step (default: the Tailer's).
	BatchSize int
}

// ScanStepper exposes one Tailer step (scanner.step) to the benchmarks and
// tests in package chatdb_test: the unit of work the Tailer repeats on every
// file event and backstop tick.
type ScanStepper struct {
	t    *Tailer
	mode StepMode
}

// NewScanStepper opens path with the Tailer's default options and positions
// it at a baseline (everything present counts as already reported).
func NewScanStepper(ctx context.Context, path string, mode StepMode) (*ScanStepper, error) {
	return NewScanStepperWith(ctx, path, StepperOptions{Mode: mode})
}

// NewScanStepperWith is NewScanStepper with the tests' options.
func NewScanStepperWith(ctx context.Context, path string, o StepperOptions) (*ScanStepper, error) {
	t := NewTailer(TailerOptions{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := t.open(ctx); err != nil {
		return nil, err
	}
	sc := t.sc
	switch o.Mode {
	case StepBaseline:
		useLegacyWindow(sc)
	case StepIsolated:
		sc.cfg.windowEvery = 0
	case StepInBurst:
		sc.cfg.windowEvery = time.Hour // longer than any benchmark
	}
	if o.WindowEvery != 0 {
		sc.cfg.windowEvery = o.WindowEvery
	}
	if o.Now != nil {
		sc.cfg.now = o.Now
	}
	if o.BatchSize > 0 {
		sc.cfg.batch = o.BatchSize
	}
	if o.BeforeWindow != nil {
		sc.windowFn = func(ctx context.Context, tx querier, sch *schema, upTo int64) ([]windowRow, error) {
			o.BeforeWindow()
			return sc.readWindow(ctx, tx, sch, upTo)
		}
	}
	c, err := sc.baseline(ctx)
	if err != nil {
		t.r.Close()
		return nil, err
	}
	t.cur = c
	return &ScanStepper{t: t, mode: o.Mode}, nil
}

// Step runs one scanner step from the current cursor and adopts the cursor
// it returns, as the Tailer does after a successful Commit. It reports the
// rows looked at, the events produced and whether the step returned at once
// (nothing to read).
func (s *ScanStepper) Step(ctx context.Context) (rows, events int, skipped bool, err error) {
	st, err := s.StepDetail(ctx, s.mode == StepBaseline, true)
	return st.Rows, len(st.Keys), st.Skipped, err
}

// StepInfo is what one step did.
type StepInfo struct {
	Keys      []string // the events' keys, sorted
	Rows      int
	Skipped   bool
	Committed bool
	More      bool
	WindowDue time.Time
}

// StepDetail runs one step (forced or not) and adopts its cursor if adopt,
// as the Tailer does when the Sink's Commit succeeds; not adopting is a
// Commit that failed.
func (s *ScanStepper) StepDetail(ctx context.Context, force, adopt bool) (StepInfo, error) {
	res, err := s.t.sc.step(ctx, s.t.cur, force)
	if err != nil {
		return StepInfo{}, err
	}
	if res.changed && adopt {
		s.t.cur = res.next
	}
	info := StepInfo{Rows: res.rows, Skipped: res.skipped, Committed: res.committed, More: res.more, WindowDue: res.windowDue}
	for _, e := range res.events {
		info.Keys = append(info.Keys, e.Key)
	}
	slices.Sort(info.Keys)
	return info, nil
}

// Close closes the reader.
func (s *ScanStepper) Close() error { return s.t.r.Close() }
