package simhelper

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/line-agent/line-agent/messages/sim"
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

// hello greets the helper on p and returns the features it announces.
func hello(p *peer) []any {
	p.t.Helper()
	p.read() // ping
	p.read() // ready
	p.send(`{"action":"line-agent-hello","data":{"protocol":1},"transactionId":"h"}`)
	m := p.read()
	f, _ := m["features"].([]any)
	return f
}

func TestCreateChatWithoutMessage(t *testing.T) {
	const one = `{"action":"create-chat","data":{"addresses":["+15550009991"],"message":null,"service":"iMessage"},"transactionId":"1"}`
	const grp = `{"action":"create-chat","data":{"addresses":["+15550009992","g@example.com"],"service":"iMessage"},"transactionId":"2"}`
	t.Run("memory", func(t *testing.T) {
		f := newFakeBridge(t)
		mem := NewMemory()
		run(t, Options{Addr: f.ln.Addr().String(), Messages: mem})
		p := f.accept()
		if fs := hello(p); !slices.Contains(fs, any("create-chat-empty")) {
			t.Fatalf("features %v", fs)
		}
		p.send(one)
		m := p.read()
		if _, has := m["identifier"]; has || m["chatGuid"] != "iMessage;-;+15550009991" || m["error"] != nil {
			t.Fatalf("answer %v", m)
		}
		if _, ok := mem.Chat("iMessage;-;+15550009991"); !ok {
			t.Fatal("no chat made")
		}
		p.send(grp)
		m = p.read()
		g, _ := m["chatGuid"].(string)
		if _, ok := mem.Chat(g); !ok || !strings.Contains(g, ";+;") {
			t.Fatalf("group answer %v", m)
		}
		for _, c := range mem.Calls() {
			if strings.HasPrefix(c, "SendText") {
				t.Fatalf("a message was sent: %v", mem.Calls())
			}
		}
	})
	t.Run("sim store writes only the chat row", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "chat.db")
		st, err := sim.Create(path, sim.WithLine("+15550000000"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		store := NewSimStore(st, SimStoreOptions{})
		t.Cleanup(store.Close)
		f := newFakeBridge(t)
		run(t, Options{Addr: f.ln.Addr().String(), Messages: store})
		p := f.accept()
		hello(p)
		db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		for _, req := range []string{one, grp} {
			p.send(req)
			m := p.read()
			g, _ := m["chatGuid"].(string)
			if g == "" || m["error"] != nil {
				t.Fatalf("answer %v", m)
			}
			var chats, rows int
			if err := db.QueryRow(`SELECT (SELECT count(*) FROM chat WHERE guid = ?), (SELECT count(*) FROM message)`, g).Scan(&chats, &rows); err != nil {
				t.Fatal(err)
			}
			if chats != 1 || rows != 0 {
				t.Fatalf("chat %s: %d chat rows, %d message rows", g, chats, rows)
			}
		}
	})
	for name, o := range map[string]Options{"withheld": {WithholdFeatures: []string{"create-chat-empty"}}, "base": {Base: true}} {
		t.Run(name, func(t *testing.T) {
			f := newFakeBridge(t)
			mem := NewMemory()
			o.Addr, o.Messages = f.ln.Addr().String(), mem
			run(t, o)
			p := f.accept()
			if name == "withheld" {
				if fs := hello(p); slices.Contains(fs, any("create-chat-empty")) || !slices.Contains(fs, any("emoji-tapback")) {
					t.Fatalf("features %v", fs)
				}
			} else {
				p.read()
				p.read()
			}
			p.send(one)
			if m := p.read(); m["error"] != "Provide a message!" {
				t.Fatalf("answer %v", m)
			}
			if len(mem.Calls()) != 0 {
				t.Fatalf("calls %v", mem.Calls())
			}
		})
	}
}

// A ChunkReads helper reads like the BlueBubbles helper: one message per
// socket read, the rest of that read lost and counted, and it does not
// claim to split its input on newlines.
func TestChunkReadsLosesWhatSharesARead(t *testing.T) {
	f := newFakeBridge(t)
	mem := NewMemory()
	mem.AddChat("iMessage;-;+1555")
	h := run(t, Options{Addr: f.ln.Addr().String(), Messages: mem, ChunkReads: true})
	p := f.accept()
	if fs := hello(p); slices.Contains(fs, any("line-framing")) || !slices.Contains(fs, any("emoji-tapback")) {
		t.Fatalf("features %v: a helper reading one message per read must not announce line-framing", fs)
	}
	req := func(id string) string {
		return `{"action":"send-message","data":{"chatGuid":"iMessage;-;+1555","message":"hi"},"transactionId":"` + id + `"}` + "\n"
	}
	// Three requests in one write reach the helper in one read.
	if _, err := p.nc.Write([]byte(req("1") + req("2") + req("3"))); err != nil {
		t.Fatal(err)
	}
	if m := p.read(); m["transactionId"] != "1" {
		t.Fatalf("answer %v, want transaction 1", m)
	}
	p.send(strings.TrimSuffix(req("4"), "\n")) // the stream stays usable
	if m := p.read(); m["transactionId"] != "4" {
		t.Fatalf("answer %v, want transaction 4 (2 and 3 were lost)", m)
	}
	if got := h.Coalesced(); got != 2 {
		t.Fatalf("Coalesced %d, want 2", got)
	}
	if got := h.Requests(); got != 3 { // hello, 1 and 4
		t.Fatalf("Requests %d, want 3", got)
	}
}
