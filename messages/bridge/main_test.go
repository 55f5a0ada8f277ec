package bridge_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	chat1 = "iMessage;-;+15550001111"
	group = "iMessage;+;chat42"
)

// env is a bridge with a simulated helper connected to it.
type env struct {
	b   *bridge.Bridge
	h   *simhelper.Helper
	mem *simhelper.Memory
	log *logBuffer
}

// listen starts a bridge on a random loopback port with test-friendly
// timeouts; bo overrides them.
func listen(t *testing.T, bo bridge.Options) (*bridge.Bridge, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	if bo.Addr == "" {
		bo.Addr = "127.0.0.1:0"
	}
	if bo.RequestTimeout == 0 {
		bo.RequestTimeout = 3 * time.Second
	}
	if bo.HandshakeTimeout == 0 {
		bo.HandshakeTimeout = 300 * time.Millisecond
	}
	if bo.WriteGap == 0 {
		bo.WriteGap = -1
	}
	bo.Logger = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b, err := bridge.Listen(context.Background(), bo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, lb
}

// start runs a bridge and a helper (line-agent by default) and waits until
// the helper's handshake is over.
func start(t *testing.T, bo bridge.Options, ho simhelper.Options) *env {
	t.Helper()
	b, lb := listen(t, bo)
	mem := simhelper.NewMemory()
	mem.AddChat(chat1, "+15550001111")
	mem.AddChat(group, "+15550001111", "+15550002222")
	if ho.Messages == nil {
		ho.Messages = mem
	}
	ho.Addr = b.Addr().String()
	h := runHelper(t, ho)
	waitReady(t, b)
	return &env{b: b, h: h, mem: mem, log: lb}
}

func runHelper(t *testing.T, ho simhelper.Options) *simhelper.Helper {
	t.Helper()
	h := simhelper.New(ho)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return h
}

func waitReady(t *testing.T, b *bridge.Bridge) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("helper never became ready: %v", err)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// code extracts the typed error's code, failing the test for other errors.
func code(t *testing.T, err error) linev1.ErrorCode {
	t.Helper()
	var e *command.Error
	if !errors.As(err, &e) {
		t.Fatalf("want *command.Error, got %T %v", err, err)
	}
	return e.Code
}

func wantCode(t *testing.T, err error, want linev1.ErrorCode) *command.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("want %v, got success", want)
	}
	if got := code(t, err); got != want {
		t.Fatalf("want %v, got %v (%v)", want, got, err)
	}
	var e *command.Error
	errors.As(err, &e)
	return e
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// logBuffer collects log output from concurrent goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
