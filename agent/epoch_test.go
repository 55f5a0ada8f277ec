package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMissingJournalIsAnnounced: an enrolled agent whose state.db vanished
// numbers its events from 1 again; it must say so, loudly, at start. A
// first start after enrollment is not that.
func TestMissingJournalIsAnnounced(t *testing.T) {
	r := startRelay(t, t.TempDir(), "127.0.0.1:0")
	defer r.Close()
	ctx := context.Background()
	tok, err := r.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Enroll(ctx, EnrollOptions{DialOptions: DialOptions{Addr: r.GRPCAddr(), CAFile: r.CAFile()}, Token: tok, DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	open := func() string {
		t.Helper()
		var logs syncBuffer
		a, err := New(Options{Config: Config{DataDir: dir, Lines: []string{testLine}},
			Backend: Backend{Name: "test", Driver: &countingDriver{}}, Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, tWriter{t}), nil))})
		if err != nil {
			t.Fatal(err)
		}
		a.journal.Close()
		return logs.String()
	}
	if logs := open(); strings.Contains(logs, "state.db was missing") {
		t.Fatalf("first start after enrollment warned about a missing journal:\n%s", logs)
	}
	if logs := open(); strings.Contains(logs, "state.db was missing") {
		t.Fatalf("a start with its journal warned:\n%s", logs)
	}
	m, _ := filepath.Glob(filepath.Join(dir, "state.db*"))
	for _, p := range m {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	logs := open()
	if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "state.db was missing: new journal epoch ") ||
		!strings.Contains(logs, "events are numbered from 1 again") {
		t.Fatalf("no warning after state.db was removed:\n%s", logs)
	}
}

func TestJournalEpoch(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := j.Epoch()
	if !j.Created() || len(first) != 32 {
		t.Fatalf("new journal: created %v, epoch %q", j.Created(), first)
	}
	j.Close()
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if j.Created() || j.Epoch() != first {
		t.Fatalf("reopened journal: created %v, epoch %q, want %q", j.Created(), j.Epoch(), first)
	}
	j.Close()
	m, _ := filepath.Glob(filepath.Join(dir, "state.db*"))
	for _, p := range m {
		os.Remove(p)
	}
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if !j.Created() || j.Epoch() == first || j.Epoch() == "" {
		t.Fatalf("re-created journal: created %v, epoch %q (old %q)", j.Created(), j.Epoch(), first)
	}
}

// helloRelay records each Hello, welcomes, then reads until the stream ends.
type helloRelay struct {
	linev1.UnimplementedLineRelayServer
	hellos chan *linev1.Hello
}

func (s *helloRelay) Connect(stream linev1.LineRelay_ConnectServer) error {
	f, err := stream.Recv()
	if err != nil {
		return err
	}
	s.hellos <- f.GetHello()
	if err := stream.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Welcome{Welcome: &linev1.Welcome{}}}); err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

func TestHelloCarriesJournalEpoch(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	relay := &helloRelay{hellos: make(chan *linev1.Hello, 4)}
	linev1.RegisterLineRelayServer(srv, relay)
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := Dial(DialOptions{Addr: lis.Addr().String(), Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	s := NewSession(SessionOptions{
		Conn:    cc,
		Tokens:  &tokenSource{creds: &Credentials{AccessToken: "t", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}},
		Journal: j,
		Submit:  func(context.Context, *linev1.Command) {},
		Health:  func(string) *linev1.HealthReport { return &linev1.HealthReport{} },
		Hello:   func() *linev1.Hello { return &linev1.Hello{AgentId: "agt"} },
		Backoff: Backoff{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond},
		Logger:  testLogger(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case h := <-relay.hellos:
		if h.GetJournalEpoch() == "" || h.GetJournalEpoch() != j.Epoch() {
			t.Errorf("Hello.journal_epoch %q, want the journal's %q", h.GetJournalEpoch(), j.Epoch())
		}
	case <-time.After(10 * time.Second):
		t.Error("no Hello")
	}
	cancel()
	<-done
}
