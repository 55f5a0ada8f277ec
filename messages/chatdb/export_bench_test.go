package chatdb

import (
	"context"
	"io"
	"log/slog"
)

// ScanStepper exposes one Tailer step (scanner.step) to the benchmarks in
// package chatdb_test: the unit of work the Tailer repeats on every file
// event and backstop tick that finds chat.db changed.
type ScanStepper struct{ t *Tailer }

// NewScanStepper opens path with the Tailer's default options and positions
// it at a baseline (everything present counts as already reported).
func NewScanStepper(ctx context.Context, path string) (*ScanStepper, error) {
	t := NewTailer(TailerOptions{Path: path, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := t.open(ctx); err != nil {
		return nil, err
	}
	c, err := t.sc.baseline(ctx)
	if err != nil {
		t.r.Close()
		return nil, err
	}
	t.cur = c
	return &ScanStepper{t: t}, nil
}

// Step runs one scanner step from the current cursor and adopts the cursor
// it returns, as the Tailer does after a successful Commit. It reports the
// rows looked at and the events produced.
func (s *ScanStepper) Step(ctx context.Context) (rows, events int, err error) {
	res, err := s.t.sc.step(ctx, s.t.cur)
	if err != nil {
		return 0, 0, err
	}
	if res.changed {
		s.t.cur = res.next
	}
	return res.rows, len(res.events), nil
}

// Close closes the reader.
func (s *ScanStepper) Close() error { return s.t.r.Close() }
