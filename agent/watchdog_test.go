package agent

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// silentRelay welcomes an agent and then says nothing more, like a relay
// whose process hangs while its TCP connection stays up: keepalive alone
// would not notice.
type silentRelay struct {
	linev1.UnimplementedLineRelayServer
	streams atomic.Int32
}

func (s *silentRelay) Connect(stream linev1.LineRelay_ConnectServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	s.streams.Add(1)
	if err := stream.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_Welcome{Welcome: &linev1.Welcome{
		HeartbeatInterval: durationpb.New(100 * time.Millisecond),
	}}}); err != nil {
		return err
	}
	for { // read (heartbeats arrive) but never answer
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

func TestWatchdogTearsDownSilentStream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	relay := &silentRelay{}
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
	far := time.Now().Add(time.Hour)
	s := NewSession(SessionOptions{
		Conn:    cc,
		Tokens:  &tokenSource{creds: &Credentials{AccessToken: "t", IssuedAt: time.Now(), ExpiresAt: far}, now: time.Now},
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
	// Each stream must die within twice the heartbeat interval (plus the
	// watchdog's tick); three streams in 1.5 s proves it is not a fluke.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for relay.streams.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := relay.streams.Load(); n < 3 {
		t.Fatalf("%d streams in 1.5 s; the watchdog did not tear the silent ones down", n)
	}
}

func TestPlaintextOnlyToLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "10.0.0.1:1": false, "relay.example.com:443": false} {
		_, err := Dial(DialOptions{Addr: addr, Plaintext: true})
		if (err == nil) != ok {
			t.Errorf("plaintext to %s: err %v, want allowed=%v", addr, err, ok)
		}
	}
}
