package bridge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestNoHelperFailsAtOnce(t *testing.T) {
	b, _ := listen(t, bridge.Options{RequestTimeout: 10 * time.Second})
	if b.Connected() || b.Capabilities() != nil {
		t.Fatal("no helper, yet connected or capable")
	}
	began := time.Now()
	_, err := b.SendText(ctx(t), bridge.SendTextRequest{ChatGUID: chat1, Text: "x"})
	e := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE)
	if time.Since(began) > time.Second || e.LastState != bridge.StateNotSent {
		t.Fatalf("took %v, last state %q", time.Since(began), e.LastState)
	}
	if h := b.Health(); h.Status != linev1.HealthStatus_HEALTH_STATUS_DOWN {
		t.Fatalf("health %v", h)
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	if b, err := bridge.Listen(context.Background(), bridge.Options{Addr: "0.0.0.0:0"}); err == nil {
		_ = b.Close()
		t.Fatal("listening on all interfaces was allowed")
	}
}

func TestTimeouts(t *testing.T) {
	e := start(t, bridge.Options{RequestTimeout: 150 * time.Millisecond}, simhelper.Options{Silent: []string{"send-message"}})
	for range 3 {
		_, err := e.b.SendText(context.Background(), bridge.SendTextRequest{ChatGUID: chat1, Text: "x"})
		if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED); got.LastState != bridge.StateSent {
			t.Fatalf("last state %q", got.LastState)
		}
	}
	if h := e.b.Health(); h.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || e.b.Unanswered() != 3 {
		t.Fatalf("three unanswered requests, health %v, Unanswered %d", h, e.b.Unanswered())
	}
	// The caller's own deadline wins when it is earlier.
	c, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := e.b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: "x"})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED)
	if time.Since(began) > 120*time.Millisecond {
		t.Fatalf("caller deadline ignored: %v", time.Since(began))
	}
	// An answer resets the count.
	if err := e.b.MarkRead(ctx(t), chat1); err != nil {
		t.Fatal(err)
	}
	if h := e.b.Health(); h.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("health after an answer %v", h)
	}
}

// A helper that goes away fails every pending request at once; the one that
// comes back is used.
func TestDisconnectFailsPendingAndReconnectIsUsed(t *testing.T) {
	e := start(t, bridge.Options{RequestTimeout: 10 * time.Second}, simhelper.Options{Delay: 10 * time.Second})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := e.b.SendText(context.Background(), bridge.SendTextRequest{ChatGUID: chat1, Text: "x"})
			errs <- err
		})
	}
	eventually(t, "4 requests at the helper", func() bool { return e.h.Requests() >= 5 }) // + hello
	began := time.Now()
	e.h.Disconnect()
	wg.Wait()
	if time.Since(began) > 2*time.Second {
		t.Fatalf("pending requests took %v to fail", time.Since(began))
	}
	close(errs)
	for err := range errs {
		if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE); got.LastState != bridge.StateSent {
			t.Fatalf("last state %q", got.LastState)
		}
	}
	if err := e.h.WaitConnects(ctx(t), 2); err != nil {
		t.Fatal(err)
	}
	waitReady(t, e.b)
	if !e.b.Connected() {
		t.Fatal("not connected after the helper came back")
	}
}

func TestDisconnectAfterNRequests(t *testing.T) {
	e := start(t, bridge.Options{}, simhelper.Options{DisconnectAfter: 2}) // 1 = hello
	c := ctx(t)
	_, err := e.b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: "lost"})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE)
	if err := e.h.WaitConnects(c, 2); err != nil {
		t.Fatal(err)
	}
	waitReady(t, e.b)
	if _, err := e.b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: "again"}); err != nil {
		t.Fatalf("after reconnect: %v", err)
	}
}

// rawHelper is a hand-driven helper connection for protocol edge cases.
type rawHelper struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t *testing.T, b *bridge.Bridge) *rawHelper {
	t.Helper()
	nc, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &rawHelper{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// next reads one request from the bridge.
func (h *rawHelper) next() (action, id string) {
	h.t.Helper()
	_ = h.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := h.r.ReadBytes('\n')
	if err != nil {
		h.t.Fatal(err)
	}
	var req struct {
		Action        string `json:"action"`
		TransactionID string `json:"transactionId"`
	}
	if err := json.Unmarshal(line, &req); err != nil {
		h.t.Fatal(err)
	}
	return req.Action, req.TransactionID
}

func (h *rawHelper) send(s string) {
	h.t.Helper()
	if _, err := h.nc.Write([]byte(s)); err != nil {
		h.t.Fatal(err)
	}
}

// handshake answers line-agent-hello with every action and line framing.
func (h *rawHelper) handshake() {
	h.t.Helper()
	action, id := h.next()
	if action != bridge.ActionHello {
		h.t.Fatalf("first request %q", action)
	}
	h.send(`{"transactionId":"` + id + `","protocol":1,"actions":["send-message","check-imessage-availability"],"features":["line-framing"]}` + "\n")
}

func TestOversizedAndMalformedLinesAreDropped(t *testing.T) {
	b, logs := listen(t, bridge.Options{MaxLineBytes: 1024})
	h := dialRaw(t, b)
	h.handshake()
	waitReady(t, b)

	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		ok, err := b.LookupHandle(context.Background(), "+15550001111")
		done <- result{ok, err}
	}()
	_, id := h.next()
	// 8 MiB without a newline, then the end of that line: the bridge must
	// skip it holding at most the limit, and keep reading.
	chunk := strings.Repeat("x", 64<<10)
	for range 128 {
		h.send(chunk)
	}
	h.send("\n")
	h.send("{not json\n")
	h.send("[1,2,3]\n")
	h.send(`{"neither":"transaction nor event"}` + "\n")
	h.send(`{"transactionId":"` + id + `","available":1}` + "\r\n")
	r := <-done
	if r.err != nil || !r.ok {
		t.Fatalf("lookup after junk: %v %v", r.ok, r.err)
	}
	log := logs.String()
	for _, want := range []string{"oversized line", "malformed line", "neither transactionId nor event"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if h := b.Health(); !strings.Contains(h.Detail, "oversized lines 1, malformed lines 2") {
		t.Fatalf("health detail %q", h.Detail)
	}
}

func TestNewConnectionReplacesOld(t *testing.T) {
	b, _ := listen(t, bridge.Options{})
	old := dialRaw(t, b)
	old.handshake()
	waitReady(t, b)
	failed := make(chan error, 1)
	go func() {
		_, err := b.SendText(context.Background(), bridge.SendTextRequest{ChatGUID: chat1, Text: "x"})
		failed <- err
	}()
	old.next()
	fresh := dialRaw(t, b)
	wantCode(t, <-failed, linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE)
	fresh.handshake()
	waitReady(t, b)
	got := make(chan error, 1)
	go func() {
		_, err := b.SendText(context.Background(), bridge.SendTextRequest{ChatGUID: chat1, Text: "y"})
		got <- err
	}()
	action, id := fresh.next()
	if action != bridge.ActionSendMessage {
		t.Fatalf("action %q", action)
	}
	fresh.send(`{"transactionId":"` + id + `","identifier":"G1"}` + "\n")
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

func TestCloseFailsPending(t *testing.T) {
	b, _ := listen(t, bridge.Options{})
	h := dialRaw(t, b)
	h.handshake()
	waitReady(t, b)
	failed := make(chan error, 1)
	go func() {
		_, err := b.SendText(context.Background(), bridge.SendTextRequest{ChatGUID: chat1, Text: "x"})
		failed <- err
	}()
	h.next()
	_ = b.Close()
	wantCode(t, <-failed, linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE)
	for range b.Events() { // closed by Close
	}
}

func TestEvents(t *testing.T) {
	e := start(t, bridge.Options{EventBuffer: 2}, simhelper.Options{})
	drain(e.b)
	if err := e.h.Emit(bridge.EventStartedTyping, chat1, nil); err != nil {
		t.Fatal(err)
	}
	ev := <-e.b.Events()
	if ev.Name != bridge.EventStartedTyping || !ev.Typing || ev.ChatGUID != chat1 {
		t.Fatalf("event %+v", ev)
	}
	_ = e.h.Emit(bridge.EventStoppedTyping, chat1, nil)
	if ev := <-e.b.Events(); ev.Name != bridge.EventStoppedTyping || ev.Typing {
		t.Fatalf("event %+v", ev)
	}

	// Five more into a buffer of two: the three oldest are dropped.
	before := e.b.DroppedEvents()
	for i := range 5 {
		_ = e.h.Emit("custom", "", map[string]int{"n": i})
	}
	eventually(t, "three drops", func() bool { return e.b.DroppedEvents()-before == 3 })
	for _, want := range []string{`{"n":3}`, `{"n":4}`} {
		if ev := <-e.b.Events(); string(ev.Data) != want {
			t.Fatalf("kept %s, want %s", ev.Data, want)
		}
	}

	// A helper going away is announced.
	e.h.Disconnect()
	eventually(t, "helper-changed", func() bool {
		select {
		case ev := <-e.b.Events():
			return ev.Name == bridge.EventHelperChanged
		default:
			return false
		}
	})
}

func drain(b *bridge.Bridge) {
	for {
		select {
		case <-b.Events():
		default:
			return
		}
	}
}
