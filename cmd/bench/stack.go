package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/messages"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

const benchLine = "+15550000001"

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// finishHook is the relay's logger: it drops everything but notes the moment
// the relay logs "command finished", which it does right after storing the
// result. That gives the time a result is back at the relay without polling.
type finishHook struct {
	mu    sync.Mutex
	waits map[string]chan time.Time
}

func newFinishHook() *finishHook { return &finishHook{waits: map[string]chan time.Time{}} }

func (h *finishHook) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *finishHook) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *finishHook) WithGroup(string) slog.Handler                { return h }
func (h *finishHook) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "command finished" {
		return nil
	}
	at := time.Now()
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "command_id" {
			return true
		}
		h.mu.Lock()
		ch := h.waits[a.Value.String()]
		delete(h.waits, a.Value.String())
		h.mu.Unlock()
		if ch != nil {
			ch <- at
		}
		return false
	})
	return nil
}

// expect registers interest in a command id before it is submitted.
func (h *finishHook) expect(id string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	h.mu.Lock()
	h.waits[id] = ch
	h.mu.Unlock()
	return ch
}

// stack is an in-process relay and, optionally, an agent connected to it
// over loopback TLS.
type stack struct {
	dir    string
	relay  *relay.Server
	hook   *finishHook
	cancel context.CancelFunc
	done   chan error
}

func startRelay(ctx context.Context, dir string) (*stack, error) {
	hook := newFinishHook()
	srv, err := relay.New(relay.Options{
		DataDir: filepath.Join(dir, "relay"), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Logger: slog.New(hook),
	})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	return &stack{dir: dir, relay: srv, hook: hook}, nil
}

// enroll enrolls a fresh agent data directory with the relay.
func (s *stack) enroll(ctx context.Context, dataDir string) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	tok, err := s.relay.CreateProjectToken(ctx)
	if err != nil {
		return err
	}
	_, err = agent.Enroll(ctx, agent.EnrollOptions{
		DialOptions: agent.DialOptions{Addr: s.relay.GRPCAddr(), CAFile: s.relay.CAFile()},
		Token:       tok, DataDir: dataDir, Lines: []string{benchLine},
	})
	return err
}

// startAgent runs an in-process agent with the given backend and waits until
// the relay sees it connected.
func (s *stack) startAgent(ctx context.Context, b agent.Backend) error {
	dataDir := filepath.Join(s.dir, "agent")
	if err := s.enroll(ctx, dataDir); err != nil {
		return err
	}
	cfg := agent.Config{DataDir: dataDir, Lines: []string{benchLine}, ShutdownGrace: 2 * time.Second,
		MaxChats: 16, MaxQueued: 1024, MaxOutbox: 10000, BackoffBase: time.Second, BackoffCap: time.Minute}
	a, err := agent.New(agent.Options{Config: cfg, Backend: b, Logger: discard})
	if err != nil {
		return err
	}
	actx, cancel := context.WithCancel(ctx)
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- a.Run(actx, nil) }()
	return waitConnected(ctx, s.relay, 15*time.Second)
}

func waitConnected(ctx context.Context, r *relay.Server, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		as, err := r.Agents(ctx)
		if err == nil && len(as) == 1 && as[0].Connected {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("agent did not connect within %v", limit)
}

func (s *stack) close() {
	if s.cancel != nil {
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
		}
	}
	s.relay.Close()
}

// instantDriver answers every command at once: the bench measures the
// agent and relay, not Messages.
type instantDriver struct{}

func (instantDriver) Capabilities() []linev1.Capability {
	return []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}
}

func (instantDriver) Execute(_ context.Context, cmd *linev1.Command, _ func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	return &linev1.Snapshot{MessageGuid: "G-" + cmd.GetId(), ChatGuid: cmd.GetChatGuid(), Sent: true}, nil
}

var _ messages.Driver = instantDriver{}

func sendText(id string, chat int) *linev1.Command {
	return &linev1.Command{Id: id, Line: benchLine,
		Target:   &linev1.Command_ChatGuid{ChatGuid: fmt.Sprintf("iMessage;-;+1555700%04d", chat)},
		Deadline: timestamppb.New(time.Now().Add(60 * time.Second)),
		Kind:     &linev1.Command_SendText{SendText: &linev1.SendText{Text: "benchmark " + id}}}
}
