package agent

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestRelayAddrsParse(t *testing.T) {
	got, err := relayAddrs(" a.example:443, b.example:8443 ")
	if err != nil || len(got) != 2 || got[0] != "a.example:443" || got[1] != "b.example:8443" {
		t.Fatalf("relayAddrs: %v %v", got, err)
	}
	for _, bad := range []string{"", "a.example", "a:443,,b:443", "a:443,a:443", ":443", "a:"} {
		if _, err := relayAddrs(bad); !errors.Is(err, ErrBadRelayAddr) {
			t.Errorf("relayAddrs(%q) = %v; want ErrBadRelayAddr", bad, err)
		}
	}
	if _, err := Dial(DialOptions{Addr: "127.0.0.1:1,relay.example:443", Plaintext: true}); !errors.Is(err, ErrPlaintextNotLoopback) {
		t.Fatalf("plaintext to a list with a remote address: %v", err)
	}
}

// healthServer serves grpc.health.v1 on l until stopped.
func healthServer(t *testing.T, l net.Listener) *grpc.Server {
	t.Helper()
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return s
}

// freePort is a 127.0.0.1 address nothing listens on (yet).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// With several relay addresses the agent's connection takes the first
// that answers, and when that one goes away it moves to another that
// does, without a new client.
func TestDialMovesToTheNextRelay(t *testing.T) {
	first, second := freePort(t), freePort(t)
	l2, err := net.Listen("tcp", second)
	if err != nil {
		t.Fatal(err)
	}
	s2 := healthServer(t, l2)
	cc, err := Dial(DialOptions{Addr: first + "," + second, Plaintext: true, Transport: &Transport{}})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	call := func(within time.Duration) error {
		deadline := time.Now().Add(within)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			cancel()
			if err == nil || time.Now().After(deadline) {
				return err
			}
		}
	}
	if err := call(10 * time.Second); err != nil {
		t.Fatalf("with the first relay down and the second up: %v", err)
	}
	s2.Stop()
	l1, err := net.Listen("tcp", first)
	if err != nil {
		t.Fatal(err)
	}
	healthServer(t, l1)
	if err := call(20 * time.Second); err != nil {
		t.Fatalf("after the second went away and the first came up: %v", err)
	}
}

// TestRelayTargetPrefersTheConfiguration: the relay and CA configured win
// over what enrollment recorded, plaintext from either holds, and an agent
// not enrolled dials what is configured. Run and doctor both take it, so a
// difference here would have doctor vouch for a relay the agent never dials.
func TestRelayTargetPrefersTheConfiguration(t *testing.T) {
	creds := &Credentials{Relay: "enrolled.example:443", CAFile: "/data/ca.pem"}
	if got := RelayTarget(Config{}, creds); got.Addr != "enrolled.example:443" || got.CAFile != "/data/ca.pem" || got.Plaintext {
		t.Fatalf("nothing configured: %+v", got)
	}
	if got := RelayTarget(Config{Relay: "a:443,b:443", CAFile: "/etc/ca.pem"}, creds); got.Addr != "a:443,b:443" || got.CAFile != "/etc/ca.pem" {
		t.Fatalf("configured: %+v", got)
	}
	creds.Plaintext = true
	if got := RelayTarget(Config{Relay: "127.0.0.1:7443"}, creds); !got.Plaintext || got.CAFile != "/data/ca.pem" {
		t.Fatalf("enrolled plaintext: %+v", got)
	}
	if got := RelayTarget(Config{Relay: "a:443"}, nil); got.Addr != "a:443" || got.CAFile != "" {
		t.Fatalf("not enrolled: %+v", got)
	}
}
