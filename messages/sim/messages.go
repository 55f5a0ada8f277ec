package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
)

// Options configure a whole simulated Messages (store, driver, remote
// people). Zero values give a working default.
type Options struct {
	// Dir is the folder for chat.db (the simulated ~/Library/Messages);
	// empty means a new temporary folder that Close removes.
	Dir string
	// Line is the account's phone number or email (default
	// DefaultLineNumber, see DefaultLine).
	Line string
	// Latency is how long sends take to be marked sent and then delivered
	// (default 5ms).
	Latency time.Duration
	// Fault injects send failures or hangs (see Fault; change it later with
	// Driver.SetFault).
	Fault Fault
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

// Messages is a complete simulated Messages: the chat.db writer, the Driver
// the agent sends through and the remote people who answer. Its chat.db is
// read by the agent exactly as a real one (ChatDBPath).
type Messages struct {
	Store  *Store
	Driver *Driver
	Remote *Remote

	reader *chatdb.Reader
	dir    string
	tmp    bool
}

// DefaultLine is the line the simulated Messages sends as by default.
func DefaultLine() string { return DefaultLineNumber }

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
	rd, err := chatdb.Open(st.Path(), chatdb.Options{Line: opts.Line, Logger: opts.Logger})
	if err != nil {
		st.Close()
		m.cleanup()
		return nil, err
	}
	m.reader = rd
	m.Driver = NewDriver(st, rd, DriverOptions{Latency: opts.Latency, Fault: opts.Fault, Logger: opts.Logger})
	ro := opts.Remote
	if ro.Seed == 0 {
		ro.Seed = opts.Seed
	}
	if ro.Logger == nil {
		ro.Logger = opts.Logger
	}
	m.Remote = NewRemote(ctx, st, ro)
	m.Driver.OnSent(m.Remote.Deliver)
	return m, nil
}

// ChatDBPath is the chat.db the agent should read.
func (m *Messages) ChatDBPath() string { return m.Store.Path() }

// Dir is the simulated Messages folder.
func (m *Messages) Dir() string { return m.dir }

// Close stops the remote people, closes the files and removes a temporary
// folder.
func (m *Messages) Close() error {
	m.Remote.Close()
	err := errors.Join(m.reader.Close(), m.Store.Close())
	m.cleanup()
	return err
}

func (m *Messages) cleanup() {
	if m.tmp {
		os.RemoveAll(m.dir)
	}
}
