package simhelper

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBridge accepts the helper and reads its lines.
type fakeBridge struct {
	t  *testing.T
	ln net.Listener
}

func newFakeBridge(t *testing.T) *fakeBridge {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return &fakeBridge{t: t, ln: ln}
}

type peer struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func (f *fakeBridge) accept() *peer {
	f.t.Helper()
	_ = f.ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	nc, err := f.ln.Accept()
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = nc.Close() })
	return &peer{t: f.t, nc: nc, r: bufio.NewReader(nc)}
}

func (p *peer) read() map[string]any {
	p.t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := p.r.ReadBytes('\n')
	if err != nil {
		p.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		p.t.Fatalf("%q: %v", line, err)
	}
	return m
}

func (p *peer) send(s string) {
	if _, err := p.nc.Write([]byte(s + "\n")); err != nil {
		p.t.Fatal(err)
	}
}

func run(t *testing.T, o Options) *Helper {
	h := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func TestGreetsAndAnswers(t *testing.T) {
	f := newFakeBridge(t)
	mem := NewMemory()
	mem.AddChat("iMessage;-;+1555")
	run(t, Options{Addr: f.ln.Addr().String(), Messages: mem})
	p := f.accept()
	if m := p.read(); m["event"] != "ping" || m["process"] != "com.apple.MobileSMS" {
		t.Fatalf("first line %v", m)
	}
	if m := p.read(); m["event"] != "ready" {
		t.Fatalf("second line %v", m)
	}
	p.send(`{"action":"line-agent-hello","data":{"protocol":1},"transactionId":"h"}`)
	if m := p.read(); m["transactionId"] != "h" || len(m["actions"].([]any)) != 13 {
		t.Fatalf("hello answer %v", m)
	}
	p.send(`{"action":"send-message","data":{"chatGuid":"iMessage;-;+1555","message":"hi","partIndex":0},"transactionId":"1"}`)
	if m := p.read(); m["transactionId"] != "1" || m["identifier"] == "" {
		t.Fatalf("send answer %v", m)
	}
	p.send(`{"action":"send-message","data":{"chatGuid":"iMessage;-;+1999","message":"hi"},"transactionId":"2"}`)
	if m := p.read(); m["error"] != "Chat does not exist!" {
		t.Fatalf("missing chat answer %v", m)
	}
}

func TestBaseIgnoresExtensionsAndReconnects(t *testing.T) {
	f := newFakeBridge(t)
	h := run(t, Options{Addr: f.ln.Addr().String(), Base: true, Fail: map[string]string{"mark-chat-read": "nope"}})
	p := f.accept()
	p.read() // ping
	p.read() // ready
	p.send(`{"action":"line-agent-hello","data":{},"transactionId":"h"}`)
	p.send(`{"action":"set-chat-background","data":{"chatGuid":"c;-;x"},"transactionId":"b"}`)
	p.send(`{"action":"mark-chat-read","data":{"chatGuid":"c;-;x"},"transactionId":"m"}`)
	if m := p.read(); m["transactionId"] != "m" || m["error"] != "nope" {
		t.Fatalf("a base helper answered %v first", m)
	}
	_ = p.nc.Close()
	f.accept().read() // it dials again and pings
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.WaitConnects(c, 2); err != nil {
		t.Fatal(err)
	}
}
