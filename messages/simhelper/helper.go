package simhelper

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// maxLine bounds one request line the simulated helper accepts.
const maxLine = 4 << 20

// Helper is one simulated helper. Run dials the bridge and keeps
// reconnecting until its context ends.
type Helper struct {
	opts Options
	log  *slog.Logger

	mu           sync.Mutex
	conn         net.Conn // guarded by mu; nil when not connected
	requests     int      // guarded by mu
	connects     int      // guarded by mu
	disconnected bool     // guarded by mu; DisconnectAfter has fired
	acted        int      // guarded by mu; requests counted for DropAfterActingEvery
	coalesced    int      // guarded by mu; ChunkReads: requests lost sharing a read
	changed      chan struct{}

	wmu sync.Mutex // serialises writes to conn
}

// New returns a Helper; call Run to start it.
func New(opts Options) *Helper {
	opts = opts.withDefaults()
	return &Helper{opts: opts, log: opts.Logger.With("component", "simhelper"), changed: make(chan struct{})}
}

// Run dials the bridge, serves the connection, and dials again (with
// backoff) whenever it ends, until ctx is done. It returns nil then.
func (h *Helper) Run(ctx context.Context) error {
	backoff := h.opts.MinBackoff
	var d net.Dialer
	for ctx.Err() == nil {
		nc, err := d.DialContext(ctx, "tcp", h.opts.Addr)
		if err == nil {
			backoff = h.opts.MinBackoff
			h.Serve(ctx, nc)
		} else {
			backoff = min(backoff*2, h.opts.MaxBackoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	return nil
}

// Serve runs the helper on one connection until the connection ends or ctx
// is done; every handler has returned by then, and nc is closed. Run
// serves each connection it dials this way. A test calls it directly with
// a connection of its own: an in-memory one inside a testing/synctest
// bubble, where a real socket would keep the bubble's clock from moving.
func (h *Helper) Serve(ctx context.Context, nc net.Conn) {
	cctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(cctx, func() { _ = nc.Close() })
	var handlers sync.WaitGroup
	defer func() {
		cancel()
		handlers.Wait()
		stop()
		_ = nc.Close()
		h.setConn(nil)
	}()
	h.setConn(nc)
	_ = h.write(nc, map[string]any{"event": "ping", "message": "Helper Connected!", "process": h.opts.Process})
	_ = h.write(nc, map[string]any{"event": "ready", "process": h.opts.Process})
	h.read(cctx, nc, func(msg []byte) {
		var req struct {
			Action        string          `json:"action"`
			Data          json.RawMessage `json:"data"`
			TransactionID *string         `json:"transactionId"`
		}
		if err := json.Unmarshal(msg, &req); err != nil {
			h.log.Warn("unparseable request", "err", err)
			return
		}
		if h.countRequest() {
			h.log.Info("disconnecting as configured", "action", req.Action)
			_ = nc.Close()
			return
		}
		drop := h.dropAfterActing()
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			h.handle(cctx, nc, req.Action, req.Data, req.TransactionID, drop)
		}()
	})
}

// read splits the stream into messages: by line, or like the BlueBubbles
// helper, one message per socket read.
func (h *Helper) read(ctx context.Context, nc net.Conn, handle func([]byte)) {
	if h.opts.ChunkReads {
		buf := make([]byte, 64<<10)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			msg := buf[:n]
			if i := bytes.Index(msg, messageBoundary); i >= 0 {
				// What the BlueBubbles helper does: the first object is
				// the message, every one after it in this read is lost.
				h.countCoalesced(bytes.Count(msg[i:], messageBoundary))
				msg = msg[:i+1]
			}
			handle(bytes.TrimSpace(msg))
			if !h.pause(ctx) {
				return
			}
		}
	}
	sc := bufio.NewScanner(nc)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
			handle(slices.Clone(line))
		}
	}
}

// messageBoundary is where one request ends and the next begins when two
// share a read: the bridge ends each with "\n".
var messageBoundary = []byte("}\n{")

// pause waits ReadPause before the next read; false when ctx ended.
func (h *Helper) pause(ctx context.Context) bool {
	if h.opts.ReadPause <= 0 {
		return true
	}
	t := time.NewTimer(h.opts.ReadPause)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (h *Helper) countCoalesced(n int) {
	h.mu.Lock()
	h.coalesced += n
	h.mu.Unlock()
	h.log.Warn("requests lost: they arrived in one read with an earlier one", "lost", n)
}

// Coalesced is how many requests a ChunkReads helper has lost because they
// arrived in the same socket read as an earlier request: what a bridge
// that writes too close together costs with the BlueBubbles helper. A
// pacing bridge keeps it at 0.
func (h *Helper) Coalesced() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.coalesced
}

// dropAfterActing counts a request for DropAfterActingEvery and reports
// whether this one's answer is to be lost with the connection.
func (h *Helper) dropAfterActing() bool {
	if h.opts.DropAfterActingEvery <= 0 {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.acted++
	return h.acted%h.opts.DropAfterActingEvery == 0
}

// countRequest counts a request and reports whether DisconnectAfter fires.
func (h *Helper) countRequest() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	if h.opts.DisconnectAfter > 0 && !h.disconnected && h.requests >= h.opts.DisconnectAfter {
		h.disconnected = true
		return true
	}
	return false
}

func (h *Helper) setConn(nc net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conn = nc
	if nc != nil {
		h.connects++
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// write sends one JSON line ending in "\r\n", as the real helper does.
func (h *Helper) write(nc net.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return h.writeRaw(nc, append(b, '\r', '\n'))
}

func (h *Helper) writeRaw(nc net.Conn, b []byte) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := nc.Write(b)
	return err
}

// ErrNotConnected is returned by Emit and WriteRaw without a connection.
var ErrNotConnected = errors.New("simhelper: not connected")

func (h *Helper) current() net.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conn
}

// Emit sends an event, as the helper does for typing indicators:
// {"event": name, "guid": chatGUID, "data": data}.
func (h *Helper) Emit(name, chatGUID string, data any) error {
	nc := h.current()
	if nc == nil {
		return ErrNotConnected
	}
	ev := map[string]any{"event": name}
	if chatGUID != "" {
		ev["guid"] = chatGUID
	}
	if data != nil {
		ev["data"] = data
	}
	return h.write(nc, ev)
}

// Disconnect drops the current connection; Run dials again.
func (h *Helper) Disconnect() {
	if nc := h.current(); nc != nil {
		_ = nc.Close()
	}
}

// Requests is how many requests the helper has received.
func (h *Helper) Requests() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests
}

// WaitConnects blocks until the helper has made n connections and holds
// one, or ctx ends.
func (h *Helper) WaitConnects(ctx context.Context, n int) error {
	for {
		h.mu.Lock()
		ok, ch := h.connects >= n && h.conn != nil, h.changed
		h.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
