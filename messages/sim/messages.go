package sim

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Options configure a whole simulated Messages (store and remote people).
// Zero values give a working default.
type Options struct {
	// Dir is the folder for chat.db (the simulated ~/Library/Messages);
	// empty means a new temporary folder that Close removes.
	Dir string
	// Line is the account's phone number or email (default
	// DefaultLineNumber).
	Line string
	// Remote configures the people who answer (the default echoes "got it:
	// <text>" after 20ms, sometimes with a like and a read receipt).
	Remote RemoteOptions
	// FillText also writes message.text, as macOS before 13 did.
	FillText bool
	// Seed makes GUIDs, chat names and the remote people's choices
	// reproducible; 0 means seed 1.
	Seed uint64
	// Clock dates rows (default time.Now).
	Clock func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Messages is a complete simulated Messages: the chat.db writer and the
// remote people who answer (hand them what is sent: Outgoing.Deliver =
// Remote.Deliver). Its chat.db is read by the agent exactly as a real one
// (ChatDBPath).
type Messages struct {
	Store  *Store
	Remote *Remote

	dir string
	tmp bool
}

// New creates (or reopens) the simulated Messages in opts.Dir and starts the
// remote people; ctx bounds their lifetime as well as Close.
func New(ctx context.Context, opts Options) (*Messages, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	if opts.Line == "" {
		opts.Line = DefaultLineNumber
	}
	m := &Messages{dir: opts.Dir}
	if m.dir == "" {
		d, err := os.MkdirTemp("", "line-agent-sim-")
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		m.dir, m.tmp = d, true
	} else if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	sopts := []StoreOption{WithSeed(opts.Seed), WithLine(opts.Line), WithText(opts.FillText)}
	if opts.Clock != nil {
		sopts = append(sopts, WithClock(opts.Clock))
	}
	st, err := Create(filepath.Join(m.dir, "chat.db"), sopts...)
	if err != nil {
		m.cleanup()
		return nil, err
	}
	m.Store = st
	// A relaunched Messages finishes the sends its last run left.
	if n, err := st.FinishPending(ctx); err != nil {
		st.Close()
		m.cleanup()
		return nil, err
	} else if n > 0 {
		opts.Logger.Info("sim: finished sends the last run left half-done", "rows", n)
	}
	ro := opts.Remote
	if ro.Seed == 0 {
		ro.Seed = opts.Seed
	}
	if ro.Logger == nil {
		ro.Logger = opts.Logger
	}
	m.Remote = NewRemote(ctx, st, ro)
	return m, nil
}

// ChatDBPath is the chat.db the agent should read.
func (m *Messages) ChatDBPath() string { return m.Store.Path() }

// Close stops the remote people, closes the files and removes a temporary
// folder.
func (m *Messages) Close() error {
	m.Remote.Close()
	err := m.Store.Close()
	m.cleanup()
	return err
}

func (m *Messages) cleanup() {
	if m.tmp {
		os.RemoveAll(m.dir)
	}
}
