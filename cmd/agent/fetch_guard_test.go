package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The sim backend as openBackend builds it (no test-only allowance) refuses
// attachment and background URLs on loopback before any connection, with
// an error that names the host only. The caller's HTTP client (here the
// test server's, which trusts its certificate) does not switch the guard
// off.
func TestSimBackendRefusesLoopbackURLs(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write(pngBytes)
	}))
	defer srv.Close()
	ctx := context.Background()
	cfg := agent.Config{DataDir: t.TempDir(), Driver: "sim", SimLine: e2eLine, SimLatency: 5 * time.Millisecond,
		SimReplyDelay: time.Hour, SimBackgroundDelay: 10 * time.Millisecond}
	var m *sim.Messages
	be, err := openSim(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)),
		simSetup{HTTPClient: srv.Client(), Messages: func(x *sim.Messages) { m = x }})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if _, err := m.Store.EnsureChat(ctx, sim.ChatSpec{GUID: e2eChat}); err != nil {
		t.Fatal(err)
	}
	url := srv.URL + signedPath
	for name, c := range map[string]*linev1.Command{
		"attachment": cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: url}}),
		"background": setBackgroundCmd(e2eChat, &linev1.SetBackground{Source: &linev1.SetBackground_Url{Url: url}}),
	} {
		_, err := be.Driver.Execute(ctx, c, nil)
		e := command.AsError(err)
		if e == nil || e.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT || !strings.Contains(e.Msg, "loopback") {
			t.Errorf("%s: want INVALID_ARGUMENT for a loopback address, got %v", name, err)
			continue
		}
		if msg := e.Proto().GetMessage(); strings.Contains(msg, "SECRET") || strings.Contains(msg, "sig=") {
			t.Errorf("%s: the error repeats the url: %q", name, msg)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server was contacted %d times", n)
	}
}
