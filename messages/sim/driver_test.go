package sim

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

var quiet = slog.New(slog.DiscardHandler)

func newSim(t *testing.T, opts Options) (*Messages, *sql.DB) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.Logger = quiet
	m, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	ro, err := sql.Open("sqlite", "file:"+m.ChatDBPath()+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	return m, ro
}

func exec(t *testing.T, m *Messages, cmd *linev1.Command) (*linev1.Snapshot, *messages.Error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := m.Driver.Execute(ctx, cmd, func(*linev1.CommandUpdate) {})
	return snap, messages.AsError(err)
}

func sendTo(handles []string, text string) *linev1.Command {
	return &linev1.Command{Id: "c1", Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: handles}},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: text}}}
}

func TestDriverSendIsTruthful(t *testing.T) {
	m, ro := newSim(t, Options{Remote: RemoteOptions{Disabled: true}})
	snap, err := exec(t, m, sendTo([]string{"+15551234567"}, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	if snap.GetChatGuid() != "iMessage;-;+15551234567" || !snap.GetSent() || !snap.GetDelivered() || !uuidRE.MatchString(snap.GetMessageGuid()) || snap.GetDate() == nil {
		t.Fatalf("snapshot %v", snap)
	}
	// What the snapshot claims is what any reader sees on disk.
	var sent, delivered, fromMe int
	var text sql.NullString
	if err := ro.QueryRow(`SELECT is_sent, is_delivered, is_from_me, text FROM message WHERE guid = ?`, snap.GetMessageGuid()).Scan(&sent, &delivered, &fromMe, &text); err != nil {
		t.Fatal(err)
	}
	if sent != 1 || delivered != 1 || fromMe != 1 || text.Valid {
		t.Errorf("row sent=%d delivered=%d from_me=%d text=%v", sent, delivered, fromMe, text)
	}
	// The same chat is reused, by participants or by any spelling of its GUID.
	again, err := exec(t, m, &linev1.Command{Target: &linev1.Command_ChatGuid{ChatGuid: "any;-;+15551234567"}, Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "again", Effect: "slam"}}})
	if err != nil || again.GetChatGuid() != snap.GetChatGuid() {
		t.Fatalf("%v %v", again, err)
	}
	var effect string
	ro.QueryRow(`SELECT expressive_send_style_id FROM message WHERE guid = ?`, again.GetMessageGuid()).Scan(&effect)
	if effect != "com.apple.MobileSMS.expressivesend.impact" {
		t.Errorf("effect %q", effect)
	}
}

func TestDriverFaults(t *testing.T) {
	m, ro := newSim(t, Options{Remote: RemoteOptions{Disabled: true}, Fault: Fault{FailCode: 22}})
	_, err := exec(t, m, sendTo([]string{"+15551234567"}, "doomed"))
	if err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_UNAVAILABLE || err.LastState != "failed (error 22)" {
		t.Fatalf("failure: %v", err)
	}
	var code int
	ro.QueryRow(`SELECT error FROM message WHERE is_from_me = 1 ORDER BY ROWID DESC LIMIT 1`).Scan(&code)
	if code != 22 {
		t.Errorf("row error %d", code)
	}

	m.Driver.SetFault(Fault{Hang: true})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, e := m.Driver.Execute(ctx, sendTo([]string{"+15551234567"}, "stuck"), func(*linev1.CommandUpdate) {})
	me := messages.AsError(e)
	if me == nil || me.Code != linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED || me.LastState != "written, not sent" {
		t.Fatalf("hang: %v", e)
	}
	var sent int
	ro.QueryRow(`SELECT is_sent FROM message WHERE is_from_me = 1 ORDER BY ROWID DESC LIMIT 1`).Scan(&sent)
	if sent != 0 {
		t.Error("a hung send must not be marked sent")
	}
}

func TestDriverValidation(t *testing.T) {
	m, _ := newSim(t, Options{Remote: RemoteOptions{Disabled: true}})
	cases := []struct {
		cmd  *linev1.Command
		code linev1.ErrorCode
	}{
		{sendTo([]string{"not a handle"}, "x"), linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{sendTo([]string{"+15551234567"}, "  "), linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{&linev1.Command{Line: "+15559999999", Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"+15551234567"}}}, Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "x"}}}, linev1.ErrorCode_ERROR_CODE_MISROUTED},
		{&linev1.Command{Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15550001111"}, Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "x"}}}, linev1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{&linev1.Command{Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"+15551234567"}}}, Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "x", Effect: "nope"}}}, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
		{&linev1.Command{Kind: &linev1.Command_React{React: &linev1.React{MessageGuid: "MISSING", Reaction: &linev1.React_Tapback{Tapback: "love"}}}}, linev1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{&linev1.Command{Kind: &linev1.Command_SendAttachment{SendAttachment: &linev1.SendAttachment{}}}, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED},
		{&linev1.Command{Kind: &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{}}}, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED},
		{&linev1.Command{}, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT},
	}
	for i, c := range cases {
		_, err := exec(t, m, c.cmd)
		if err == nil || err.Code != c.code {
			t.Errorf("case %d: %v, want %v", i, err, c.code)
		}
	}
	_, err := exec(t, m, &linev1.Command{Kind: &linev1.Command_LookupHandle{LookupHandle: &linev1.LookupHandle{Handle: "+15551234567"}}})
	if err == nil || err.Capability != linev1.Capability_CAPABILITY_LOOKUP_HANDLE {
		t.Errorf("unsupported must name the capability: %v", err)
	}
}

func TestDriverCapabilitiesAreImplemented(t *testing.T) {
	m, ro := newSim(t, Options{Remote: RemoteOptions{Disabled: true}})
	caps := m.Driver.Capabilities()
	first, err := exec(t, m, sendTo([]string{"+15551234567"}, "first"))
	if err != nil {
		t.Fatal(err)
	}
	chat := &linev1.Command_ChatGuid{ChatGuid: first.GetChatGuid()}
	cmds := map[linev1.Capability]*linev1.Command{
		linev1.Capability_CAPABILITY_SEND_TEXT:   {Target: chat, Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "x", Subject: "s", Effect: "confetti", ReplyTo: &linev1.ReplyTo{MessageGuid: first.GetMessageGuid()}}}},
		linev1.Capability_CAPABILITY_TYPING:      {Target: chat, Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}},
		linev1.Capability_CAPABILITY_REACT:       {Kind: &linev1.Command_React{React: &linev1.React{MessageGuid: first.GetMessageGuid(), Reaction: &linev1.React_Tapback{Tapback: "love"}}}},
		linev1.Capability_CAPABILITY_EDIT:        {Kind: &linev1.Command_Edit{Edit: &linev1.Edit{MessageGuid: first.GetMessageGuid(), Text: "first!"}}},
		linev1.Capability_CAPABILITY_MARK_READ:   {Target: chat, Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}},
		linev1.Capability_CAPABILITY_CREATE_CHAT: {Kind: &linev1.Command_CreateChat{CreateChat: &linev1.CreateChat{Participants: []string{"+15551110001", "+15551110002"}, Name: "Team", FirstMessage: "welcome"}}},
		linev1.Capability_CAPABILITY_UNSEND:      {Kind: &linev1.Command_Unsend{Unsend: &linev1.Unsend{MessageGuid: first.GetMessageGuid()}}},
	}
	order := []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_TYPING, linev1.Capability_CAPABILITY_REACT,
		linev1.Capability_CAPABILITY_EDIT, linev1.Capability_CAPABILITY_MARK_READ, linev1.Capability_CAPABILITY_CREATE_CHAT, linev1.Capability_CAPABILITY_UNSEND}
	for _, c := range caps {
		if messages.CapabilityName(c) == "effect" || messages.CapabilityName(c) == "reply" || messages.CapabilityName(c) == "subject" {
			continue // features of send_text, exercised by its command
		}
		if cmds[c] == nil {
			t.Errorf("capability %v has no test command", c)
		}
	}
	for _, c := range order {
		if !slices.Contains(caps, c) {
			t.Errorf("%v implemented but not advertised", c)
		}
		snap, err := exec(t, m, cmds[c])
		if err != nil {
			t.Errorf("%v: %v", c, err)
			continue
		}
		if snap.GetChatGuid() == "" {
			t.Errorf("%v: snapshot without chat: %v", c, snap)
		}
	}
	var style int
	var name string
	ro.QueryRow(`SELECT style, display_name FROM chat WHERE style = 43`).Scan(&style, &name)
	if name != "Team" {
		t.Errorf("group %d %q", style, name)
	}
	var retracted, edited int64
	ro.QueryRow(`SELECT date_edited, date_retracted FROM message WHERE guid = ?`, first.GetMessageGuid()).Scan(&edited, &retracted)
	if edited == 0 || retracted == 0 {
		t.Errorf("edit/unsend not in chat.db: %d %d", edited, retracted)
	}
	// Not our message: cannot be edited.
	r, _ := m.Remote.Say(context.Background(), "+15551234567", "theirs")
	if _, err := exec(t, m, &linev1.Command{Kind: &linev1.Command_Edit{Edit: &linev1.Edit{MessageGuid: r.GUID, Text: "mine now"}}}); err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Errorf("editing someone else's message: %v", err)
	}
}

// events collects what a Tailer reads from the simulated chat.db.
type events struct {
	mu  sync.Mutex
	evs []*linev1.Event
}

func (e *events) Commit(_ context.Context, evs []*linev1.Event, _ []byte) error {
	e.mu.Lock()
	e.evs = append(e.evs, evs...)
	e.mu.Unlock()
	return nil
}

func (e *events) find(pred func(*linev1.Event) bool) *linev1.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.evs {
		if pred(ev) {
			return ev
		}
	}
	return nil
}

// TestRemotePeopleReply runs the whole loop: the driver sends, the remote
// person reads, likes and replies, and the chatdb Tailer turns every row
// into an event.
func TestRemotePeopleReply(t *testing.T) {
	m, _ := newSim(t, Options{Remote: RemoteOptions{Script: func(_ *rand.Rand, who string, d Delivery) []Action {
		return []Action{{Read: true}, {Tapback: "like"}, {After: 5 * time.Millisecond, Reply: "got it: " + d.Text}}
	}}})
	ctx, cancel := context.WithCancel(context.Background())
	tl := chatdb.NewTailer(chatdb.TailerOptions{Path: m.ChatDBPath(), Logger: quiet})
	sink := &events{}
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx, nil, sink) }()
	defer func() { cancel(); <-done }()
	time.Sleep(50 * time.Millisecond) // baseline

	snap, err := exec(t, m, sendTo([]string{"+15551234567"}, "ping"))
	if err != nil {
		t.Fatal(err)
	}
	g := snap.GetMessageGuid()
	deadline := time.Now().Add(10 * time.Second)
	want := map[string]func(*linev1.Event) bool{
		"message": func(e *linev1.Event) bool { return e.GetKey() == g+"/message/0" && e.GetMessage().GetFromMe() },
		"sent":    func(e *linev1.Event) bool { return e.GetKey() == g+"/sent/0" },
		"read":    func(e *linev1.Event) bool { return e.GetKey() == g+"/read/0" && e.GetRead().GetFromMe() },
		"tapback": func(e *linev1.Event) bool {
			return e.GetTapback().GetTargetMessageGuid() == g && e.GetTapback().GetTapback() == "like" && e.GetTapback().GetSender() == "+15551234567"
		},
		"reply": func(e *linev1.Event) bool {
			return e.GetMessage().GetText() == "got it: ping" && !e.GetMessage().GetFromMe() && e.GetMessage().GetSender() == "+15551234567"
		},
	}
	for name, pred := range want {
		for sink.find(pred) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("no %s event", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// The delivered receipt may land before or after the snapshot: it must be
	// there too, since the snapshot said delivered.
	for sink.find(func(e *linev1.Event) bool { return e.GetKey() == g+"/delivered/0" }) == nil {
		if time.Now().After(deadline) {
			t.Fatal("snapshot said delivered but no delivered event")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRemoteDeterministic: the same seed gives the same rows.
func TestRemoteDeterministic(t *testing.T) {
	run := func() []string {
		m, ro := newSim(t, Options{Seed: 42, Remote: RemoteOptions{Delay: time.Millisecond}})
		for i := 0; i < 6; i++ {
			if _, err := exec(t, m, sendTo([]string{"+15551234567"}, strings.Repeat("x", i+1))); err != nil {
				t.Fatal(err)
			}
			if err := m.Remote.Settle(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		var out []string
		for {
			out = out[:0]
			rows, _ := ro.Query(`SELECT guid, is_from_me, associated_message_type, is_read FROM message ORDER BY ROWID`)
			for rows.Next() {
				var g string
				var fromMe, assoc, read int
				rows.Scan(&g, &fromMe, &assoc, &read)
				out = append(out, strings.Join([]string{g, string(rune('0' + fromMe)), string(rune('0' + assoc%10)), string(rune('0' + read))}, ","))
			}
			rows.Close()
			replies := 0
			for _, s := range out {
				if strings.Contains(s, ",0,0,") {
					replies++
				}
			}
			if replies == 6 {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d replies: %v", replies, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a, b := run(), run()
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different rows:\n%v\n%v", a, b)
	}
}

func TestSay(t *testing.T) {
	m, ro := newSim(t, Options{Remote: RemoteOptions{Disabled: true}})
	r, err := m.Remote.Say(context.Background(), "friend@example.com", "hi first")
	if err != nil {
		t.Fatal(err)
	}
	var fromMe int
	var handle string
	if err := ro.QueryRow(`SELECT m.is_from_me, h.id FROM message m JOIN handle h ON h.ROWID = m.handle_id WHERE m.guid = ?`, r.GUID).Scan(&fromMe, &handle); err != nil {
		t.Fatal(err)
	}
	if fromMe != 0 || handle != "friend@example.com" {
		t.Errorf("%d %s", fromMe, handle)
	}
	if errors.Is(err, ErrNoChat) {
		t.Fatal()
	}
}
