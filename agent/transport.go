package agent

import (
	"context"
	"net"
	"sync"
)

// Transport is the agent's own TCP dialer for the relay connection. It
// remembers the connections it made so that the session can drop them when
// the relay went silent: gRPC keeps using an HTTP/2 connection that still
// looks open (a half-open TCP connection after a NAT timeout or a network
// change looks exactly like that) until its keepalive gives up, tens of
// seconds later, and every new stream in between goes into the void.
// Closing the socket makes gRPC dial afresh at once.
type Transport struct {
	d     net.Dialer
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// dial is the grpc.WithContextDialer function.
func (t *Transport) dial(ctx context.Context, addr string) (net.Conn, error) {
	c, err := t.d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[tc] = struct{}{}
	t.mu.Unlock()
	return tc, nil
}

// Drop closes every connection made so far and returns how many there
// were; the next stream dials a new one.
func (t *Transport) Drop() int {
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

// trackedConn forgets itself when closed.
type trackedConn struct {
	net.Conn
	t    *Transport
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
