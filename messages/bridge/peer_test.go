package bridge_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/bridge"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Listen refuses every address the network could reach, with a typed
// error naming the address and the rule.
func TestListenAddrError(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.168.1.10:0", "[::]:0", "example.com:0", "no-port"} {
		_, err := bridge.Listen(context.Background(), bridge.Options{Addr: addr})
		var ae *bridge.AddrError
		if !errors.As(err, &ae) || ae.Addr != addr || !strings.Contains(err.Error(), addr) {
			t.Fatalf("%s: want an AddrError naming it, got %v", addr, err)
		}
		if addr != "no-port" && !strings.Contains(err.Error(), "only a loopback address") {
			t.Fatalf("%s: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		b, err := bridge.Listen(context.Background(), bridge.Options{Addr: addr})
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		_ = b.Close()
	}
}

// refuser refuses every connection, naming a process as macpeer does.
type refuser struct{}

type namedRefusal struct{}

func (namedRefusal) Error() string                     { return "it is not Messages" }
func (namedRefusal) PeerProcess() (int, string)        { return 4242, "/usr/bin/python3" }
func (refuser) Verify(context.Context, net.Conn) error { return namedRefusal{} }

// hanger never decides: it waits for its context, or ignores it and
// accepts too late.
type hanger struct{ ignoreCtx bool }

func (h hanger) Verify(ctx context.Context, _ net.Conn) error {
	if h.ignoreCtx {
		time.Sleep(500 * time.Millisecond)
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

// dialRefused connects like a helper would and sends the helper's greeting;
// it returns what the bridge wrote before closing (must be nothing) and
// how long that took.
func dialRefused(t *testing.T, b *bridge.Bridge) (string, time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, `{"event":"ping","message":"Helper Connected!","process":"evil"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(bufio.NewReader(c))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the refused connection stayed open (read %q)", got)
	}
	return string(got), time.Since(start)
}

// A refused process gets its connection closed before the bridge writes
// a frame or reads its greeting; the refusal is logged at WARN with the
// pid and path and counted in the helper's health.
func TestRefusedPeerClosedAtOnce(t *testing.T) {
	b, lb := listen(t, bridge.Options{Verifier: refuser{}})
	for range 2 {
		if got, _ := dialRefused(t, b); got != "" {
			t.Fatalf("the bridge wrote %q to a refused peer", got)
		}
	}
	eventually(t, "two refusals counted", func() bool {
		return strings.Contains(b.Health().GetDetail(), "refused 2 connections from /usr/bin/python3 (pid 4242)")
	})
	h := b.Health()
	if b.Connected() || h.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN {
		t.Fatalf("a refused peer became the helper: %v", h)
	}
	log := lb.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "pid=4242") || !strings.Contains(log, "path=/usr/bin/python3") {
		t.Fatalf("refusal not logged with pid and path:\n%s", log)
	}
	if strings.Contains(log, "evil") || strings.Contains(log, "helper says hello") {
		t.Fatalf("the refused peer's greeting was read:\n%s", log)
	}
}

// A verifier that hangs refuses when VerifyTimeout passes (fail closed),
// also one that ignores its context and says yes too late.
func TestVerifierHangFailsClosed(t *testing.T) {
	for _, h := range []hanger{{}, {ignoreCtx: true}} {
		b, _ := listen(t, bridge.Options{Verifier: h, VerifyTimeout: 200 * time.Millisecond})
		got, took := dialRefused(t, b)
		if got != "" || took > 3*time.Second {
			t.Fatalf("ignoreCtx %v: wrote %q, took %v", h.ignoreCtx, got, took)
		}
		if b.Connected() || !strings.Contains(b.Health().GetDetail(), "refused 1 connection from an unidentified process") {
			t.Fatalf("ignoreCtx %v: %v", h.ignoreCtx, b.Health())
		}
	}
}
