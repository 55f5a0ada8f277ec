package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// openBackend builds Messages as the configuration names it: the simulated
// Messages (its own chat.db under the data directory), or the real one.
// Either way inbound goes through the same chat.db tailer.
func openBackend(ctx context.Context, cfg agent.Config, log *slog.Logger) (agent.Backend, error) {
	switch cfg.Driver {
	case "sim":
		dir := filepath.Join(cfg.DataDir, "sim")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return agent.Backend{}, err
		}
		m, err := sim.New(ctx, sim.Options{
			Dir: dir, Line: cfg.SimLine, Latency: cfg.SimLatency,
			Remote: sim.RemoteOptions{Delay: cfg.SimReplyDelay, Logger: log.With("component", "sim-remote")},
			Logger: log.With("component", "sim"),
		})
		if err != nil {
			return agent.Backend{}, fmt.Errorf("simulated Messages: %w", err)
		}
		path := m.ChatDBPath()
		if cfg.ChatDB != "" {
			path = cfg.ChatDB
		}
		return agent.Backend{
			Name:   "sim",
			Driver: m.Driver,
			Tailer: chatdb.NewTailer(chatdb.TailerOptions{Path: path, Logger: log.With("component", "chatdb")}),
			Lines:  []string{cfg.SimLine},
			Close:  m.Close,
		}, nil
	case "macos":
		return openMacOS(ctx, cfg, log)
	}
	return agent.Backend{}, usageError("unknown driver %q: want sim or macos", cfg.Driver)
}

// openMacOS is the real Messages. The AppleScript sender and the private-API
// bridge are wired by the command-execution issue; until then the agent on a
// Mac streams events from chat.db and answers every command UNSUPPORTED.
func openMacOS(_ context.Context, cfg agent.Config, log *slog.Logger) (agent.Backend, error) {
	path := cfg.ChatDB
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return agent.Backend{}, err
		}
		path = filepath.Join(home, "Library", "Messages", "chat.db")
	}
	if len(cfg.Lines) == 0 {
		return agent.Backend{}, usageError("driver macos needs the lines this Mac's Messages account serves: set LINE_AGENT_LINES or --lines")
	}
	return agent.Backend{
		Name:   "macos",
		Driver: noDriver{},
		Tailer: chatdb.NewTailer(chatdb.TailerOptions{Path: path, Logger: log.With("component", "chatdb")}),
		Lines:  cfg.Lines,
	}, nil
}
