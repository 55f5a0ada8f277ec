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
			h.serve(ctx, nc)
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

// serve runs one connection to its end; every handler has returned by then.
func (h *Helper) serve(ctx context.Context, nc net.Conn) {
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
	h.read(nc, func(msg []byte) {
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
func (h *Helper) read(nc net.Conn, handle func([]byte)) {
	if h.opts.ChunkReads {
		buf := make([]byte, 64<<10)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			msg := buf[:n]
			if i := bytes.Index(msg, []byte("}\n{")); i >= 0 {
				msg = msg[:i+1] // what the BlueBubbles helper does: the rest is lost
			}
			handle(bytes.TrimSpace(msg))
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
