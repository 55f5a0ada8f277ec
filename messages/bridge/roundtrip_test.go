package bridge_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestEveryActionRoundTrips(t *testing.T) {
	e := start(t, bridge.Options{}, simhelper.Options{})
	b, mem, c := e.b, e.mem, ctx(t)
	slam, _ := effects.Lookup("slam")

	first := must[bridge.Sent](t)(b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: "hello", EffectID: slam.ID, Subject: "re"}))
	if first.MessageGUID == "" || first.ChatGUID != chat1 {
		t.Fatalf("send: %+v", first)
	}
	m, _ := mem.Message(first.MessageGUID)
	if m.Text != "hello" || m.EffectID != slam.ID || m.Subject != "re" {
		t.Fatalf("stored %+v", m)
	}

	reply := must[bridge.Sent](t)(b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: "a reply", ReplyTo: first.MessageGUID, ReplyPart: 0}))
	if m, _ := mem.Message(reply.MessageGUID); m.ReplyTo != first.MessageGUID {
		t.Fatalf("reply target %q", m.ReplyTo)
	}

	att := must[bridge.Sent](t)(b.SendAttachment(c, bridge.SendAttachmentRequest{ChatGUID: chat1, Path: "/tmp/x.png"}))
	if m, _ := mem.Message(att.MessageGUID); m.Path != "/tmp/x.png" {
		t.Fatalf("attachment path %q", m.Path)
	}

	if err := b.Typing(c, chat1, true); err != nil {
		t.Fatal(err)
	}
	if ch, _ := mem.Chat(chat1); !ch.Typing {
		t.Fatal("typing not on")
	}
	if err := b.Typing(c, chat1, false); err != nil {
		t.Fatal(err)
	}
	if ch, _ := mem.Chat(chat1); ch.Typing {
		t.Fatal("typing not off")
	}

	for _, r := range []bridge.ReactRequest{
		{ChatGUID: chat1, TargetGUID: first.MessageGUID, Code: 2001},
		{ChatGUID: chat1, TargetGUID: first.MessageGUID, Code: 3001},
		{ChatGUID: chat1, TargetGUID: first.MessageGUID, Code: 2006, Emoji: "🎉"},
	} {
		s := must[bridge.Sent](t)(b.React(c, r))
		m, _ := mem.Message(s.MessageGUID)
		want := map[int]string{2001: "like", 3001: "-like", 2006: "emoji"}[r.Code]
		if m.Reaction != want || m.Target != first.MessageGUID || m.Emoji != r.Emoji {
			t.Fatalf("reaction %d stored as %+v", r.Code, m)
		}
	}

	if err := b.Edit(c, bridge.EditRequest{ChatGUID: chat1, MessageGUID: first.MessageGUID, Text: "hello!"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Unsend(c, chat1, reply.MessageGUID, 0); err != nil {
		t.Fatal(err)
	}
	if m, _ := mem.Message(first.MessageGUID); m.Text != "hello!" || !slices.Equal(m.Edited, []string{"hello"}) {
		t.Fatalf("edit: %+v", m)
	}
	if m, _ := mem.Message(reply.MessageGUID); !slices.Equal(m.Unsent, []int{0}) {
		t.Fatalf("unsend: %+v", m)
	}

	if err := b.MarkRead(c, chat1); err != nil {
		t.Fatal(err)
	}
	if ch, _ := mem.Chat(chat1); !ch.Read {
		t.Fatal("not read")
	}

	created := must[bridge.Sent](t)(b.CreateChat(c, bridge.CreateChatRequest{Addresses: []string{"+15550003333", "a@example.com"}, Message: "hi all"}))
	if created.ChatGUID == "" || created.MessageGUID == "" {
		t.Fatalf("create-chat answer %+v", created)
	}
	if err := b.RenameGroup(c, created.ChatGUID, "Team"); err != nil {
		t.Fatal(err)
	}
	if ch, _ := mem.Chat(created.ChatGUID); ch.Name != "Team" {
		t.Fatalf("name %q", ch.Name)
	}

	mem.SetUnreachable("+15559999999")
	if ok := must[bool](t)(b.LookupHandle(c, "+15550001111")); !ok {
		t.Fatal("reachable handle reported unreachable")
	}
	if ok := must[bool](t)(b.LookupHandle(c, "+15559999999")); ok {
		t.Fatal("unreachable handle reported reachable")
	}

	var mu sync.Mutex
	var stages []string
	asset := must[string](t)(b.SetBackground(c, chat1, "/tmp/bg.jpg", "image/jpeg", func(p bridge.Progress) {
		mu.Lock()
		stages = append(stages, p.Stage)
		mu.Unlock()
	}))
	if ch, _ := mem.Chat(chat1); asset == "" || ch.Background != asset {
		t.Fatalf("background %q, chat has %q", asset, ch.Background)
	}
	mu.Lock()
	if !slices.Equal(stages, []string{"uploading", "distributable"}) {
		t.Fatalf("progress stages %v", stages)
	}
	mu.Unlock()
	if err := b.ClearBackground(c, chat1); err != nil {
		t.Fatal(err)
	}
	if ch, _ := mem.Chat(chat1); ch.Background != "" {
		t.Fatal("background not cleared")
	}
}

func TestLineAgentHelperCapabilities(t *testing.T) {
	e := start(t, bridge.Options{}, simhelper.Options{Withhold: []string{"edit-message"}})
	caps := e.b.Capabilities()
	if !slices.Contains(caps, linev1.Capability_CAPABILITY_SET_BACKGROUND) || slices.Contains(caps, linev1.Capability_CAPABILITY_EDIT) {
		t.Fatalf("capabilities %v", caps)
	}
	err := e.b.Edit(ctx(t), bridge.EditRequest{ChatGUID: chat1, MessageGUID: "m", Text: "x"})
	if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED); got.Capability != linev1.Capability_CAPABILITY_EDIT {
		t.Fatalf("unsupported names %v", got.Capability)
	}
	if h := e.b.Health(); h.Status != linev1.HealthStatus_HEALTH_STATUS_OK || h.Name != "helper" {
		t.Fatalf("health %v", h)
	}
}

// A plain BlueBubbles helper ignores line-agent-hello and reads one message
// per socket read: the bridge must fall back to the base set and space its
// writes so that no request is lost.
func TestBlueBubblesHelper(t *testing.T) {
	e := start(t, bridge.Options{WriteGap: bridge.DefaultWriteGap}, simhelper.Options{Base: true, ChunkReads: true})
	b, c := e.b, ctx(t)
	caps := b.Capabilities()
	for _, want := range []linev1.Capability{
		linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_TYPING, linev1.Capability_CAPABILITY_REACT,
		linev1.Capability_CAPABILITY_EFFECT, linev1.Capability_CAPABILITY_LOOKUP_HANDLE,
	} {
		if !slices.Contains(caps, want) {
			t.Errorf("base set lacks %v", want)
		}
	}
	if slices.Contains(caps, linev1.Capability_CAPABILITY_SET_BACKGROUND) || slices.Contains(caps, linev1.Capability_CAPABILITY_CLEAR_BACKGROUND) {
		t.Fatalf("base set claims backgrounds: %v", caps)
	}

	_, err := b.SetBackground(c, chat1, "/tmp/bg.jpg", "", nil)
	if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED); got.Capability != linev1.Capability_CAPABILITY_SET_BACKGROUND {
		t.Fatalf("unsupported names %v", got.Capability)
	}
	_, err = b.React(c, bridge.ReactRequest{ChatGUID: chat1, TargetGUID: "m", Code: 2006, Emoji: "🎉"})
	if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED); got.Capability != linev1.Capability_CAPABILITY_REACT {
		t.Fatalf("unsupported names %v", got.Capability)
	}

	// Concurrent sends: without the write gap two would share a read.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 3 {
		wg.Go(func() {
			_, err := b.SendText(c, bridge.SendTextRequest{ChatGUID: chat1, Text: string(rune('a' + i))})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Current BlueBubbles helpers answer create-chat with the message GUID only.
	s := must[bridge.Sent](t)(b.CreateChat(c, bridge.CreateChatRequest{Addresses: []string{"+15550004444"}, Message: "hi"}))
	if s.MessageGUID == "" || s.ChatGUID != "" {
		t.Fatalf("create-chat %+v", s)
	}
	if h := b.Health(); h.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("health %v", h)
	}
}

func TestHelperErrorsAreTyped(t *testing.T) {
	e := start(t, bridge.Options{}, simhelper.Options{Fail: map[string]string{"mark-chat-read": "Something broke"}})
	c := ctx(t)
	_, err := e.b.SendText(c, bridge.SendTextRequest{ChatGUID: "iMessage;-;+15557777777", Text: "x"})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_NOT_FOUND)
	err = e.b.MarkRead(c, chat1)
	if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INTERNAL); got.Msg != "the helper refused mark-chat-read: Something broke" {
		t.Fatalf("message %q", got.Msg)
	}
	// Both tapback and emoji is a caller error, found before any request.
	_, err = e.b.React(c, bridge.ReactRequest{ChatGUID: chat1, TargetGUID: "m", Code: 2001, Emoji: "🎉"})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	_, err = e.b.React(c, bridge.ReactRequest{ChatGUID: chat1, TargetGUID: "m", Code: 2007})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
}
