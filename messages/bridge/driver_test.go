package bridge_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func onChat(chat string) *linev1.Command {
	return &linev1.Command{Id: "cmd-1", Line: "+15550000000", Target: &linev1.Command_ChatGuid{ChatGuid: chat}}
}

func with(c *linev1.Command, f func(*linev1.Command)) *linev1.Command { f(c); return c }

func sendText(st *linev1.SendText) *linev1.Command {
	return with(onChat(chat1), func(c *linev1.Command) { c.Kind = &linev1.Command_SendText{SendText: st} })
}

func react(r *linev1.React) *linev1.Command {
	return with(onChat(chat1), func(c *linev1.Command) { c.Kind = &linev1.Command_React{React: r} })
}

func tapback(name string) *linev1.React_Tapback { return &linev1.React_Tapback{Tapback: name} }

// validCommands has one good command of every kind against chat1 or group,
// whose target message is guid.
func validCommands(guid string) map[string]*linev1.Command {
	k := func(chat string, kind func(*linev1.Command)) *linev1.Command { return with(onChat(chat), kind) }
	return map[string]*linev1.Command{
		"send_text": sendText(&linev1.SendText{Text: "hi", Effect: "confetti", Subject: "s"}),
		"send_attachment": k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_SendAttachment{SendAttachment: &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: []byte("png")}, FileName: "a.png"}}
		}),
		"typing": k(chat1, func(c *linev1.Command) { c.Kind = &linev1.Command_Typing{Typing: &linev1.Typing{On: true}} }),
		"react":  react(&linev1.React{MessageGuid: guid, Reaction: tapback("love")}),
		"edit": k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_Edit{Edit: &linev1.Edit{MessageGuid: guid, Text: "fixed"}}
		}),
		"unsend":    k(chat1, func(c *linev1.Command) { c.Kind = &linev1.Command_Unsend{Unsend: &linev1.Unsend{MessageGuid: guid}} }),
		"mark_read": k(chat1, func(c *linev1.Command) { c.Kind = &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}} }),
		"set_background": k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{Source: &linev1.SetBackground_Data{Data: []byte("jpg")}, MimeType: "image/jpeg"}}
		}),
		"clear_background": k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_ClearBackground{ClearBackground: &linev1.ClearBackground{}}
		}),
		"create_chat": k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_CreateChat{CreateChat: &linev1.CreateChat{Participants: []string{"+15550005555"}, FirstMessage: "hello"}}
		}),
		"rename_group": k(group, func(c *linev1.Command) {
			c.Kind = &linev1.Command_RenameGroup{RenameGroup: &linev1.RenameGroup{Name: "Crew"}}
		}),
		"lookup_handle": k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_LookupHandle{LookupHandle: &linev1.LookupHandle{Handle: "a@example.com"}}
		}),
	}
}

func TestDriverValidation(t *testing.T) {
	b, _ := listen(t, bridge.Options{})
	d := bridge.NewDriver(b, bridge.DriverOptions{Stager: bridge.DirStager{Dir: t.TempDir()}})
	k := func(chat string, kind func(*linev1.Command)) *linev1.Command { return with(onChat(chat), kind) }
	cases := []struct {
		name     string
		cmd      *linev1.Command
		contains []string
	}{
		{"unknown effect lists the valid ones", sendText(&linev1.SendText{Text: "hi", Effect: "sparkle-pony"}), []string{`unknown effect "sparkle-pony"`, "slam", "confetti", "echo"}},
		{"empty text", sendText(&linev1.SendText{}), []string{"text is empty"}},
		{"whitespace text", sendText(&linev1.SendText{Text: " \n\t"}), []string{"only whitespace"}},
		{"huge text", sendText(&linev1.SendText{Text: strings.Repeat("a", bridge.MaxTextBytes+1)}), []string{"limit"}},
		{"no target", with(sendText(&linev1.SendText{Text: "hi"}), func(c *linev1.Command) { c.Target = nil }), []string{"chat_guid or participants"}},
		{"bad chat guid", with(sendText(&linev1.SendText{Text: "hi"}), func(c *linev1.Command) { c.Target = &linev1.Command_ChatGuid{ChatGuid: "nonsense"} }), []string{"not a chat GUID"}},
		{"reply without target guid", sendText(&linev1.SendText{Text: "hi", ReplyTo: &linev1.ReplyTo{}}), []string{"message_guid is missing"}},
		{"unknown tapback lists the valid ones", react(&linev1.React{MessageGuid: "G", Reaction: tapback("hug")}), []string{`unknown tapback "hug"`, "love", "question"}},
		{"neither tapback nor emoji", react(&linev1.React{MessageGuid: "G"}), []string{"exactly one of tapback"}},
		{"react missing target guid", react(&linev1.React{Reaction: tapback("love")}), []string{"message_guid is missing"}},
		{"emoji that is a word", react(&linev1.React{MessageGuid: "G", Reaction: &linev1.React_Emoji{Emoji: "love"}}), []string{"not a single emoji"}},
		{"negative part", react(&linev1.React{MessageGuid: "G", Part: -1, Reaction: tapback("love")}), []string{"negative"}},
		{"edit empty text", k(chat1, func(c *linev1.Command) { c.Kind = &linev1.Command_Edit{Edit: &linev1.Edit{MessageGuid: "G"}} }), []string{"text is empty"}},
		{"edit missing guid", k(chat1, func(c *linev1.Command) { c.Kind = &linev1.Command_Edit{Edit: &linev1.Edit{Text: "x"}} }), []string{"message_guid is missing"}},
		{"unsend missing guid", k(chat1, func(c *linev1.Command) { c.Kind = &linev1.Command_Unsend{Unsend: &linev1.Unsend{}} }), []string{"message_guid is missing"}},
		{"attachment without file", k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_SendAttachment{SendAttachment: &linev1.SendAttachment{}}
		}), []string{"file is missing"}},
		{"attachment over http", k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_SendAttachment{SendAttachment: &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: "http://x/y.png"}}}
		}), []string{"not https"}},
		{"background not an image", k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{Source: &linev1.SetBackground_Data{Data: []byte{1}}, MimeType: "text/plain"}}
		}), []string{"not an image"}},
		{"rename a one-to-one chat", k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_RenameGroup{RenameGroup: &linev1.RenameGroup{Name: "x"}}
		}), []string{"only groups"}},
		{"rename to nothing", k(group, func(c *linev1.Command) { c.Kind = &linev1.Command_RenameGroup{RenameGroup: &linev1.RenameGroup{}} }), []string{"name is empty"}},
		{"create chat with a blank first message", k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_CreateChat{CreateChat: &linev1.CreateChat{Participants: []string{"+15550001111"}, FirstMessage: " \n"}}
		}), []string{"first_message is only whitespace"}},
		{"create chat with a bad handle", k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_CreateChat{CreateChat: &linev1.CreateChat{Participants: []string{"bob"}, FirstMessage: "hi"}}
		}), []string{"a handle must be a phone number"}},
		{"typing without a chat", with(k(chat1, func(c *linev1.Command) { c.Kind = &linev1.Command_Typing{Typing: &linev1.Typing{}} }), func(c *linev1.Command) {
			c.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"+15550001111"}}}
		}), []string{"typing needs a chat_guid"}},
		{"lookup of a non-handle", k(chat1, func(c *linev1.Command) {
			c.Kind = &linev1.Command_LookupHandle{LookupHandle: &linev1.LookupHandle{Handle: "not a handle"}}
		}), []string{"a handle must be a phone number"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := d.Execute(ctx(t), c.cmd, nil)
			e := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
			for _, s := range c.contains {
				if !strings.Contains(e.Msg, s) {
					t.Errorf("message %q lacks %q", e.Msg, s)
				}
			}
		})
	}
}

func TestDriverWithoutHelperFailsAtOnce(t *testing.T) {
	b, _ := listen(t, bridge.Options{RequestTimeout: 10 * time.Second})
	d := bridge.NewDriver(b, bridge.DriverOptions{Stager: bridge.DirStager{Dir: t.TempDir()}})
	if d.Capabilities() != nil {
		t.Fatal("capabilities without a helper")
	}
	for name, cmd := range validCommands("G") {
		began := time.Now()
		_, err := d.Execute(ctx(t), cmd, nil)
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE)
		if time.Since(began) > time.Second {
			t.Errorf("%s took %v", name, time.Since(began))
		}
	}
}

func TestDriverUnsupportedNamesCapability(t *testing.T) {
	e := start(t, bridge.Options{WriteGap: 10 * time.Millisecond}, simhelper.Options{Base: true})
	d := bridge.NewDriver(e.b, bridge.DriverOptions{Stager: bridge.DirStager{Dir: t.TempDir()}})
	for name, want := range map[string]linev1.Capability{
		"set_background":   linev1.Capability_CAPABILITY_SET_BACKGROUND,
		"clear_background": linev1.Capability_CAPABILITY_CLEAR_BACKGROUND,
	} {
		_, err := d.Execute(ctx(t), validCommands("G")[name], nil)
		if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED); got.Capability != want || !strings.Contains(got.Msg, name) {
			t.Fatalf("%s: %v %q", name, got.Capability, got.Msg)
		}
	}
	_, err := d.Execute(ctx(t), react(&linev1.React{MessageGuid: "G", Reaction: &linev1.React_Emoji{Emoji: "🎉"}}), nil)
	if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED); got.Capability != linev1.Capability_CAPABILITY_REACT {
		t.Fatalf("emoji: %v", got.Capability)
	}
}

// recorder is a Confirmer that records what it was asked and adds Sent.
type recorder struct {
	mu    sync.Mutex
	kinds []string
	chat  string // chat GUID to fill in when the answer lacks one
}

func (r *recorder) Check(context.Context, *linev1.Command) (confirm.Before, error) {
	return confirm.Before{}, nil
}

func (r *recorder) Confirm(_ context.Context, cmd *linev1.Command, _ confirm.Before, answered *linev1.Snapshot, _ func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.kinds = append(r.kinds, command.KindName(cmd))
	out := &linev1.Snapshot{MessageGuid: answered.GetMessageGuid(), ChatGuid: answered.GetChatGuid(), AssetId: answered.GetAssetId(), Sent: true}
	if out.ChatGuid == "" {
		out.ChatGuid = r.chat
	}
	return out, nil
}

func TestDriverExecutesEveryKind(t *testing.T) {
	e := start(t, bridge.Options{}, simhelper.Options{})
	spool := t.TempDir()
	conf := &recorder{}
	d := bridge.NewDriver(e.b, bridge.DriverOptions{Confirm: conf, Stager: bridge.DirStager{Dir: spool}})
	target, err := e.b.SendText(ctx(t), bridge.SendTextRequest{ChatGUID: chat1, Text: "target"})
	if err != nil {
		t.Fatal(err)
	}
	var updates []*linev1.CommandUpdate
	var umu sync.Mutex
	report := func(u *linev1.CommandUpdate) { umu.Lock(); updates = append(updates, u); umu.Unlock() }
	for name, cmd := range validCommands(target.MessageGUID) {
		snap, err := d.Execute(ctx(t), cmd, report)
		if name == "set_background" || name == "clear_background" {
			// Without a chat.db reader nothing could prove a background:
			// refused (background_test.go runs them against chat.db).
			wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		switch name {
		case "send_text", "send_attachment", "react", "create_chat":
			if snap.MessageGuid == "" || !snap.Sent {
				t.Errorf("%s: snapshot %v", name, snap)
			}
		case "lookup_handle":
			if !snap.Reachable {
				t.Errorf("lookup: %v", snap)
			}
		}
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Fatalf("staged files left behind: %v", ents)
	}
	slices.Sort(conf.kinds)
	if want := []string{"create_chat", "edit", "mark_read", "react", "rename_group", "send_attachment", "send_text", "unsend"}; !slices.Equal(conf.kinds, want) {
		t.Fatalf("confirmed %v, want %v (typing and look-ups leave no row)", conf.kinds, want)
	}
	if slices.Contains(d.Capabilities(), linev1.Capability_CAPABILITY_SET_BACKGROUND) {
		t.Fatal("backgrounds advertised without a chat.db reader to prove them")
	}
}

func TestDriverSendToParticipantsCreatesChat(t *testing.T) {
	e := start(t, bridge.Options{}, simhelper.Options{})
	d := bridge.NewDriver(e.b, bridge.DriverOptions{})
	cmd := with(sendText(&linev1.SendText{Text: "first"}), func(c *linev1.Command) {
		c.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: []string{"+15550006666"}}}
	})
	snap, err := d.Execute(ctx(t), cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	if snap.ChatGuid != "iMessage;-;+15550006666" || snap.Service != "iMessage" {
		t.Fatalf("snapshot %v", snap)
	}
}

func TestDriverNamesNewGroup(t *testing.T) {
	named := func(cmdName string) *linev1.Command {
		return with(onChat(chat1), func(c *linev1.Command) {
			c.Target = nil
			c.Kind = &linev1.Command_CreateChat{CreateChat: &linev1.CreateChat{Participants: []string{"+15550007777", "b@example.com"}, FirstMessage: "hi", Name: cmdName}}
		})
	}
	t.Run("line-agent helper gives the chat guid", func(t *testing.T) {
		e := start(t, bridge.Options{}, simhelper.Options{})
		snap, err := bridge.NewDriver(e.b, bridge.DriverOptions{}).Execute(ctx(t), named("Crew"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if ch, _ := e.mem.Chat(snap.ChatGuid); ch.Name != "Crew" {
			t.Fatalf("chat %v named %q", snap.ChatGuid, ch.Name)
		}
	})
	t.Run("base helper needs chat.db", func(t *testing.T) {
		e := start(t, bridge.Options{WriteGap: 10 * time.Millisecond}, simhelper.Options{Base: true})
		_, err := bridge.NewDriver(e.b, bridge.DriverOptions{}).Execute(ctx(t), named("Crew"), nil)
		if got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INTERNAL); got.LastState != "created_not_named" {
			t.Fatalf("last state %q", got.LastState)
		}
		e.mem.AddChat(group)
		conf := &recorder{chat: group}
		snap, err := bridge.NewDriver(e.b, bridge.DriverOptions{Confirm: conf}).Execute(ctx(t), named("Crew"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if ch, _ := e.mem.Chat(group); ch.Name != "Crew" || snap.ChatGuid != group || len(conf.kinds) != 1 {
			t.Fatalf("named %q, snapshot %v, confirmed %v", ch.Name, snap, conf.kinds)
		}
	})
}

// TestDriverCreateChatWithoutFirstMessage: a helper announcing
// create-chat-empty creates the chat without sending; any other helper is
// refused UNSUPPORTED create_chat before anything reaches it.
func TestDriverCreateChatWithoutFirstMessage(t *testing.T) {
	create := func(name string, parts ...string) *linev1.Command {
		return with(onChat(chat1), func(c *linev1.Command) {
			c.Target = nil
			c.Kind = &linev1.Command_CreateChat{CreateChat: &linev1.CreateChat{Participants: parts, Name: name}}
		})
	}
	cases := []struct {
		name    string
		helper  simhelper.Options
		cmd     *linev1.Command
		chat    string // want this chat GUID ("" = a new group)
		group   string // want the group named so
		refused bool
	}{
		{"one-to-one with the feature", simhelper.Options{}, create("", "+15550008881"), "iMessage;-;+15550008881", "", false},
		{"named group with the feature", simhelper.Options{}, create("Crew", "+15550008882", "c@example.com"), "", "Crew", false},
		{"unnamed group with the feature", simhelper.Options{}, create("", "+15550008883", "d@example.com"), "", "", false},
		{"feature withheld", simhelper.Options{WithholdFeatures: []string{bridge.FeatureCreateChatEmpty}}, create("", "+15550008884"), "", "", true},
		{"feature withheld, named group", simhelper.Options{WithholdFeatures: []string{bridge.FeatureCreateChatEmpty}}, create("Crew", "+15550008885", "e@example.com"), "", "", true},
		{"BlueBubbles helper", simhelper.Options{Base: true}, create("", "+15550008886"), "", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := start(t, bridge.Options{WriteGap: time.Millisecond}, c.helper)
			conf := &recorder{}
			d := bridge.NewDriver(e.b, bridge.DriverOptions{Confirm: conf})
			before := e.h.Requests()
			snap, err := d.Execute(ctx(t), c.cmd, nil)
			if c.refused {
				got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED)
				if got.Capability != linev1.Capability_CAPABILITY_CREATE_CHAT || !strings.Contains(got.Msg, "create_chat") ||
					!strings.Contains(got.Msg, "only create a chat by sending its first message") {
					t.Fatalf("error %+v", got)
				}
				time.Sleep(20 * time.Millisecond) // a stray request would have arrived by now
				if n := e.h.Requests() - before; n != 0 || slices.ContainsFunc(e.mem.Calls(), func(s string) bool { return strings.HasPrefix(s, "CreateChat") }) {
					t.Fatalf("%d requests reached the helper: %v", n, e.mem.Calls())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if snap.MessageGuid != "" || snap.ChatGuid == "" || (c.chat != "" && snap.ChatGuid != c.chat) {
				t.Fatalf("snapshot %v", snap)
			}
			if c.chat == "" && !strings.Contains(snap.ChatGuid, ";+;") {
				t.Fatalf("group chat guid %q", snap.ChatGuid)
			}
			ch, ok := e.mem.Chat(snap.ChatGuid)
			if !ok || ch.Name != c.group {
				t.Fatalf("chat %v (%v) named %q", snap.ChatGuid, ok, ch.Name)
			}
			if len(conf.kinds) != 1 || conf.kinds[0] != "create_chat" {
				t.Fatalf("confirmed %v", conf.kinds)
			}
		})
	}
}

func TestBridgeCreateChatWithoutMessage(t *testing.T) {
	e := start(t, bridge.Options{}, simhelper.Options{})
	s, err := e.b.CreateChat(ctx(t), bridge.CreateChatRequest{Addresses: []string{"+15550008887"}})
	if err != nil || s.ChatGUID != "iMessage;-;+15550008887" || s.MessageGUID != "" {
		t.Fatalf("%+v %v", s, err)
	}
	_, err = e.b.CreateChat(ctx(t), bridge.CreateChatRequest{Addresses: []string{"+15550008887"}, EffectID: "com.apple.messages.effect.CKConfettiEffect"})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
}
