package chaos

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/pkg/localstack"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// proxy forwards TCP connections to a target, and on Blackhole makes every
// connection open at that moment go silent both ways without closing it:
// the half-open connection a NAT or a sleeping laptop leaves behind. Later
// connections pass again.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[*pipe]struct{}
	wg    sync.WaitGroup
}

// pipe is one proxied connection; dead stops both copy loops from writing.
type pipe struct {
	mu   sync.Mutex
	dead bool
	a, b net.Conn
}

func (p *pipe) isDead() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dead
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[*pipe]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pp := &pipe{a: c, b: up}
		p.mu.Lock()
		p.conns[pp] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.copy(pp, up, c)
		go p.copy(pp, c, up)
	}
}

// copy moves bytes from src to dst until either end closes; once the pipe
// is dead it reads and drops them, so neither end hears anything.
func (p *proxy) copy(pp *pipe, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pp.isDead() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !pp.isDead() {
				_ = err // a reset: the other side hears it through the close
			}
			if !pp.isDead() {
				pp.a.Close()
				pp.b.Close()
			}
			return
		}
	}
}

// blackhole silences every connection open now.
func (p *proxy) blackhole() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pp := range p.conns {
		pp.mu.Lock()
		pp.dead = true
		pp.mu.Unlock()
	}
	n := len(p.conns)
	p.conns = map[*pipe]struct{}{}
	return n
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for pp := range p.conns {
		pp.a.Close()
		pp.b.Close()
	}
	p.mu.Unlock()
	// Silenced pipes still hold their sockets; the test's end closes the
	// processes on the other side, which ends their reads.
}

// TestHalfOpenConnection silences the agent's connection to the relay both
// ways without closing it. The agent's watchdog must notice within two
// heartbeats and dial again; a command submitted at that moment is
// delivered once the new stream is up, and nothing is lost or doubled.
func TestHalfOpenConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	runs := scale(1, 5)
	const heartbeat = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var px *proxy
	st := startWith(ctx, t, localstack.Options{
		RelayArgs:  []string{"--heartbeat", heartbeat.String()},
		AgentArgs:  []string{"--sim-reply-delay", "30s"},
		AgentRelay: func(grpcAddr string) string { px = startProxy(t, grpcAddr); return px.addr() },
	})
	line := st.Agent.Lines[0]
	var cmds []*linev1.Command
	var recov []time.Duration
	for run := range runs {
		if n := px.blackhole(); n == 0 {
			t.Fatalf("run %d: no connection to silence", run)
		}
		at := time.Now()
		c := sendText("halfopen", run, line)
		cmds = append(cmds, c)
		submitAll(ctx, t, st, []*linev1.Command{c}, 0)
		fin := finals(ctx, st, []*linev1.Command{c}, 2*time.Minute)
		if fin[c.Id] == nil || fin[c.Id].State != "succeeded" {
			t.Fatalf("run %d: the command did not succeed after the connection went silent: %+v", run, fin[c.Id])
		}
		took := time.Since(at)
		recov = append(recov, took)
		// Two heartbeats to notice, then a reconnect with backoff.
		if limit := 2*heartbeat + 5*time.Second; took > limit {
			t.Errorf("run %d: %s from silence to the command's result; the watchdog should notice within two heartbeats (%s)", run, took, 2*heartbeat)
		}
	}
	r := judge(t, cmds, finals(ctx, st, cmds, time.Minute), outgoingTexts(ctx, t, st.ChatDB()))
	r.fault, r.runs, r.recover = "half-open connection (silent both ways)", runs, recov
	r.note = "heartbeat 2 s; recover: silence to the command's result"
	record(t, r)
}

// TestSameCommandDeliveredTwiceAtOnce submits every command from several
// clients at once and kills the relay mid-run, so the agent also gets ids
// again on redelivery: each command is still one message.
func TestSameCommandDeliveredTwiceAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	n := scale(30, 200)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st := startStack(ctx, t, "--sim-reply-delay", "30s")
	line := st.Agent.Lines[0]
	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("twice", i, line)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			submitAll(ctx, t, st, cmds, 5*time.Millisecond)
		}()
	}
	time.Sleep(time.Duration(n) * 5 * time.Millisecond / 2)
	at := time.Now()
	st.KillRelay()
	if err := st.StartRelay(ctx); err != nil {
		t.Fatal(err)
	}
	recov := time.Since(at)
	wg.Wait()
	r := judge(t, cmds, finals(ctx, st, cmds, 3*time.Minute), outgoingTexts(ctx, t, st.ChatDB()))
	r.fault, r.runs, r.recover = "same ids from 4 clients at once, relay killed mid-run", 1, []time.Duration{recov}
	record(t, r)
}
