package applescript

import (
	"context"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// One rule for handles and chat GUIDs, whichever driver runs a send (issue
// 9 item 1). On a Mac a formatted number or a malformed handle used to pass
// or fail depending on whether the private-API helper was connected. Here
// one chat.db (messages/sim) is behind the bridge's driver with the
// simulated helper connected and behind this driver (the fake osascript),
// composed and confirmed as the agent does it on a Mac: every target gets
// the same typed error, or lands in the same chat, with the helper
// connected and after it has gone.
func TestOneTargetRuleWithAndWithoutHelper(t *testing.T) {
	var conf *confirm.Confirmer
	h := newHarness(t, nil, func(o *Options) {
		conf = confirm.New(o.ChatDB.(*chatdb.Reader), confirm.Options{MaxPoll: 5 * time.Millisecond})
		o.Confirm = conf
	})
	store := simhelper.NewSimStore(h.store, simhelper.SimStoreOptions{Reader: h.db, Latency: time.Millisecond})
	t.Cleanup(store.Close) // after the helper stops: cleanups run last first
	b, err := bridge.Listen(context.Background(), bridge.Options{Addr: "127.0.0.1:0", HandshakeTimeout: 300 * time.Millisecond, WriteGap: -1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	hctx, stopHelper := context.WithCancel(context.Background())
	helperDone := make(chan struct{})
	go func() {
		defer close(helperDone)
		_ = simhelper.New(simhelper.Options{Addr: b.Addr().String(), Messages: store}).Run(hctx)
	}()
	t.Cleanup(func() { stopHelper(); <-helperDone })
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Wait(wctx); err != nil {
		t.Fatalf("the simulated helper never connected: %v", err)
	}
	d := messages.Compose(bridge.NewDriver(b, bridge.DriverOptions{Confirm: conf, Stager: bridge.DirStager{Dir: t.TempDir()}}), h.sender)

	to := func(hs ...string) *linev1.Command { return textToHandles("", hs...) }
	in := func(g string) *linev1.Command { return textTo(g, "") }
	targets := map[string]*linev1.Command{
		"formatted number":           to("+1 (555) 765-4321"),
		"ten digits":                 to("555.765.4322"),
		"email in capitals":          to("Dana@Example.COM"),
		"letters in a number":        to("+1 555 abc 0001"),
		"a word":                     to("bob"),
		"a country code of 0":        to("+0123456789"),
		"an empty domain label":      to("a@example..com"),
		"a display name":             to("Dana <dana@example.com>"),
		"an empty handle":            to(""),
		"no participants":            to(),
		"formatted chat GUID":        in("iMessage;-;+1 (555) 123-0001"),
		"chat GUID of another case":  in("IMESSAGE;-;+15551230001"),
		"unknown chat":               in("iMessage;-;+15559999999"),
		"unknown service":            in("Mail;-;+15551230001"),
		"bad style":                  in("iMessage;x;+15551230001"),
		"a semicolon in the chat id": in("iMessage;-;a;b"),
	}
	type outcome struct {
		code linev1.ErrorCode
		msg  string
		chat string // the chat's key, for a send that succeeded
	}
	run := func(phase string) map[string]outcome {
		out := map[string]outcome{}
		for name, cmd := range targets {
			cmd.GetSendText().Text = name + " (" + phase + ")" // one row per send
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			snap, err := d.Execute(ctx, cmd, func(*linev1.CommandUpdate) {})
			cancel()
			if err != nil {
				e := command.AsError(err)
				out[name] = outcome{code: e.Code, msg: e.Msg}
				continue
			}
			if !snap.GetSent() {
				t.Errorf("%s %s: not sent: %v", phase, name, snap)
			}
			out[name] = outcome{chat: command.ChatKey(snap.GetChatGuid())}
		}
		return out
	}

	withHelper := run("helper")
	if n := len(h.records()); n != 0 {
		t.Fatalf("with the helper connected osascript ran %d times", n)
	}
	stopHelper()
	<-helperDone
	for deadline := time.Now().Add(5 * time.Second); b.Connected(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the bridge never saw the helper go")
		}
	}
	withoutHelper := run("applescript")
	if len(h.records()) == 0 {
		t.Fatal("without the helper osascript never ran")
	}

	want := map[string]string{
		"formatted number":          "-;+15557654321",
		"ten digits":                "-;+15557654322",
		"email in capitals":         "-;dana@example.com",
		"formatted chat GUID":       "-;+15551230001",
		"chat GUID of another case": "-;+15551230001",
	}
	for name := range targets {
		a, s := withHelper[name], withoutHelper[name]
		if a != s {
			t.Errorf("%s: with the helper %+v, without %+v", name, a, s)
		}
		switch {
		case want[name] != "" && a.chat != want[name]:
			t.Errorf("%s: landed in %q, want %q", name, a.chat, want[name])
		case name == "unknown chat" && a.code != linev1.ErrorCode_ERROR_CODE_NOT_FOUND:
			t.Errorf("%s: %+v, want NOT_FOUND", name, a)
		case want[name] == "" && name != "unknown chat" && a.code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT:
			t.Errorf("%s: %+v, want INVALID_ARGUMENT", name, a)
		}
	}
}
