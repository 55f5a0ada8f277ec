package applescript

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Hostile texts must reach chat.db byte for byte and never appear in the
// script osascript ran: values travel only in argv.
func TestHostileTextsArriveByteForByte(t *testing.T) {
	h := newHarness(t, nil, func(o *Options) { o.MaxTextRunes = 200_000 })
	big := strings.Repeat("0123456789abcdef\"\\", 100<<10/18+1)[:100<<10]
	texts := map[string]string{
		"quotes":       `she said "hi" and 'bye'`,
		"backslashes":  `C:\path\to\"file\" \\ end\`,
		"injection":    `" & do shell script "id" & "`,
		"injection2":   "\" & (do shell script \"touch /tmp/pwned\") & \"\nend tell\ntell application \"Finder\" to delete every item",
		"newlines":     "line one\nline two\r\nline three\n",
		"rtl":          "\u202eabc\u202c مرحبا بالعالم שלום",
		"emoji_zwj":    "family 👨\u200d👩\u200d👧\u200d👦 flag 🏳️\u200d🌈 skin 👍🏽",
		"shell":        "$(id) `id` ; rm -rf ~ | cat /etc/passwd > x",
		"applescript":  "end run\non run argv\n\tdo shell script \"id\"\nend run",
		"100KB":        big,
		"control":      "tab\there \x01\x1b[31m red",
		"leading-dash": "-e 'do shell script \"id\"'",
	}
	names := make([]string, 0, len(texts))
	for n := range texts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		text := texts[name]
		t.Run(name, func(t *testing.T) {
			before := len(h.records())
			snap, err := h.exec(textTo(chatOne, text))
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			if !snap.GetSent() || snap.GetMessageGuid() == "" || snap.GetChatGuid() != chatOne || snap.GetService() != "iMessage" || snap.GetDate() == nil {
				t.Fatalf("snapshot %v", snap)
			}
			got := h.rowText(snap.GetMessageGuid())
			if got != text {
				t.Fatalf("row text differs: got %d bytes %q..., want %d bytes", len(got), trunc(got), len(text))
			}
			recs := h.records()[before:]
			if len(recs) != 1 {
				t.Fatalf("want 1 osascript run, got %d", len(recs))
			}
			r := recs[0]
			if r.Script != scriptTextToChat {
				t.Fatalf("script is not the constant:\n%s", r.Script)
			}
			if len(r.Argv) != 2 || r.Argv[0] != text || r.Argv[1] != chatOne {
				t.Fatalf("argv = %q", trunc(strings.Join(r.Argv, "|")))
			}
			if strings.Contains(r.Script, text) {
				t.Fatal("the text appears in the script source")
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80]
	}
	return s
}

// Invalid texts fail with INVALID_ARGUMENT before anything runs.
func TestTextValidation(t *testing.T) {
	h := newHarness(t, nil, nil)
	cases := map[string]string{
		"empty":      "",
		"whitespace": " \n\t ",
		"nul":        "before\x00after",
		"invalid":    "bad \xff\xfe utf8",
		"100KB":      strings.Repeat("x", 100<<10),
		"over-runes": strings.Repeat("é", DefaultMaxTextRunes+1),
	}
	for name, text := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := h.exec(textTo(chatOne, text))
			me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
			if name == "nul" && !strings.Contains(me.Msg, "NUL") {
				t.Fatalf("message does not name NUL: %v", me)
			}
		})
	}
	if n := len(h.records()); n != 0 {
		t.Fatalf("osascript ran %d times for invalid input", n)
	}
	// Exactly at the limit is fine.
	if _, err := h.exec(textTo(chatOne, strings.Repeat("é", DefaultMaxTextRunes))); err != nil {
		t.Fatalf("text at the limit: %v", err)
	}
	// The hard byte ceiling holds even with a huge rune limit.
	h2 := newHarness(t, nil, func(o *Options) { o.MaxTextRunes = 10 << 20 })
	_, err := h2.exec(textTo(chatOne, strings.Repeat("x", MaxTextBytes+1)))
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
}

func TestBadTargets(t *testing.T) {
	h := newHarness(t, nil, nil)
	// The one handle rule (command.CheckHandle) refuses these, as the
	// bridge's driver does; a short code ("12345") and a trimmed address
	// ("a@example.com\n") are handles under it.
	handles := []string{
		"", "   ", "+0123456789", "+1234567890123456", "+1 555 abc 0001", "12",
		"user@", "@example.com", "user@localhost", "a b@example.com", "Name <a@example.com>",
		"a@example..com", "a@@example.com", "+1555\x001230001",
	}
	for _, hd := range handles {
		_, err := h.exec(textToHandles("hi", hd))
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	for _, g := range []string{"", "chat123", "iMessage;x;+1555", "Mail;-;+15551230001", "iMessage;-;", "iMessage;-;a;b", "iMessage;-;+1555\n1230001"} {
		_, err := h.exec(textTo(g, "hi"))
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	_, err := h.exec(&linev1.Command{Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi"}}})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	_, err = h.exec(textToHandles("hi"))
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	if n := len(h.records()); n != 0 {
		t.Fatalf("osascript ran %d times for invalid targets", n)
	}
}

// A participant send opens a new one-to-one chat; on macOS 26 Messages files
// it under any;-;<handle>, and the sender still finds the row.
func TestParticipantSend(t *testing.T) {
	h := newHarness(t, nil, nil)
	snap, err := h.exec(textToHandles("hello new friend", "+1 (555) 123-0003"))
	if err != nil {
		t.Fatal(err)
	}
	if snap.GetChatGuid() != "any;-;+15551230003" || !snap.GetSent() {
		t.Fatalf("snapshot %v", snap)
	}
	recs := h.records()
	if len(recs) != 1 || recs[0].Script != scriptTextToParticipant || recs[0].Argv[1] != "+15551230003" {
		t.Fatalf("runs %+v", recs)
	}
}

// Several participants without a chat GUID is group creation: UNSUPPORTED.
func TestGroupCreationUnsupported(t *testing.T) {
	h := newHarness(t, nil, nil)
	_, err := h.exec(textToHandles("hi all", "+15551230003", "+15551230004"))
	me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED)
	if me.Capability != linev1.Capability_CAPABILITY_CREATE_CHAT {
		t.Fatalf("capability %v", me.Capability)
	}
	if len(h.records()) != 0 {
		t.Fatal("osascript ran")
	}
}

func TestUnsupportedFeatures(t *testing.T) {
	h := newHarness(t, nil, nil)
	base := func(st *linev1.SendText) *linev1.Command {
		return &linev1.Command{Target: &linev1.Command_ChatGuid{ChatGuid: chatOne}, Kind: &linev1.Command_SendText{SendText: st}}
	}
	cases := []struct {
		cmd  *linev1.Command
		want linev1.Capability
	}{
		{base(&linev1.SendText{Text: "x", Effect: "slam"}), linev1.Capability_CAPABILITY_EFFECT},
		{base(&linev1.SendText{Text: "x", ReplyTo: &linev1.ReplyTo{MessageGuid: "g"}}), linev1.Capability_CAPABILITY_REPLY},
		{base(&linev1.SendText{Text: "x", Subject: "s"}), linev1.Capability_CAPABILITY_SUBJECT},
		{fileTo(chatOne, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: []byte("x")}, Effect: "confetti"}), linev1.Capability_CAPABILITY_EFFECT},
		{&linev1.Command{Target: &linev1.Command_ChatGuid{ChatGuid: chatOne}, Kind: &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}}, linev1.Capability_CAPABILITY_TYPING},
		{&linev1.Command{Target: &linev1.Command_ChatGuid{ChatGuid: chatOne}, Kind: &linev1.Command_React{React: &linev1.React{}}}, linev1.Capability_CAPABILITY_REACT},
	}
	for _, c := range cases {
		_, err := h.exec(c.cmd)
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED)
		if me.Capability != c.want {
			t.Errorf("capability %v, want %v", me.Capability, c.want)
		}
	}
	if len(h.records()) != 0 {
		t.Fatal("osascript ran")
	}
	got := h.sender.Capabilities()
	if !slices.Equal(got, []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_SEND_ATTACHMENT}) {
		t.Fatalf("capabilities %v", got)
	}
}

// AppleScript error numbers become codes a caller can act on.
func TestErrorMapping(t *testing.T) {
	cases := []struct {
		env    string
		code   linev1.ErrorCode
		cap    linev1.Capability
		inMsg  string
		chat   string
		nRuns  int
		nOpens int
	}{
		{env: "FAKEOSA_FAIL=-1728", code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, inMsg: "no chat", nRuns: 1},
		{env: "FAKEOSA_FAIL=-1700", code: linev1.ErrorCode_ERROR_CODE_UNSUPPORTED, cap: linev1.Capability_CAPABILITY_SEND_TEXT, inMsg: "-1700", nRuns: 1},
		{env: "FAKEOSA_FAIL=-1743", code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, inMsg: "System Settings > Privacy & Security > Automation", nRuns: 1},
		{env: "FAKEOSA_FAIL=-600", code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, inMsg: "not running", nRuns: 2, nOpens: 1},
		{env: "FAKEOSA_FAIL=-10000", code: linev1.ErrorCode_ERROR_CODE_UNSUPPORTED, cap: linev1.Capability_CAPABILITY_CREATE_CHAT, inMsg: "-10000", nRuns: 1},
		{env: "FAKEOSA_FAIL=-2741", code: linev1.ErrorCode_ERROR_CODE_INTERNAL, inMsg: "-2741", nRuns: 1},
		{env: "FAKEOSA_GARBAGE=1", code: linev1.ErrorCode_ERROR_CODE_INTERNAL, inMsg: "exited 1", nRuns: 1},
		// No scripted failure: the chat really does not exist.
		{env: "X=1", chat: "iMessage;-;+15559999999", code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, inMsg: "iMessage;-;+15559999999", nRuns: 1},
		// -600, then open(1) itself fails.
		{env: "FAKEOSA_FAIL=-600,FAKEOPEN_FAIL=1", code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, inMsg: "launching it failed", nRuns: 1, nOpens: 1},
	}
	for _, c := range cases {
		t.Run(c.env, func(t *testing.T) {
			h := newHarness(t, strings.Split(c.env, ","), nil)
			chat := chatOne
			if c.chat != "" {
				chat = c.chat
			}
			_, err := h.exec(textTo(chat, "hello"))
			me := wantCode(t, err, c.code)
			if me.Capability != c.cap {
				t.Errorf("capability %v, want %v", me.Capability, c.cap)
			}
			if !strings.Contains(me.Error(), c.inMsg) {
				t.Errorf("message %q lacks %q", me.Error(), c.inMsg)
			}
			runs, opens := 0, 0
			for _, r := range h.records() {
				if r.Open {
					opens++
					if !slices.Equal(r.Argv, []string{"-g", "-a", "Messages"}) {
						t.Errorf("open argv %q", r.Argv)
					}
				} else {
					runs++
				}
			}
			if runs != c.nRuns || opens != c.nOpens {
				t.Errorf("osascript runs %d opens %d, want %d and %d", runs, opens, c.nRuns, c.nOpens)
			}
		})
	}
}

func TestParseScriptError(t *testing.T) {
	for in, want := range map[string]int{
		"-:123:160: execution error: Messages got an error: Can’t get chat id \"x\". (-1728)\n": -1728,
		"execution error: Not authorized to send Apple events to Messages. (-1743)":             -1743,
		"warning: something\n-:1:2: execution error: x (-600)\n\n":                              -600,
		"no number here": 0,
		"":               0,
	} {
		if got := parseScriptError([]byte(in), 1).Number; got != want {
			t.Errorf("parse %q = %d, want %d", in, got, want)
		}
	}
	long := "execution error: " + strings.Repeat("é", 1000) + " (-1)"
	if se := parseScriptError([]byte(long), 1); len([]rune(se.Detail)) > maxDetail+1 || se.Number != -1 {
		t.Errorf("detail not bounded: %d runes, number %d", len([]rune(se.Detail)), se.Number)
	}
}

// -600 once: Messages is launched with open(1) and the send retried once.
func TestNotRunningLaunchesAndRetries(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_FAIL_ONCE=-600"}, nil)
	snap, err := h.exec(textTo(chatOne, "wake up"))
	if err != nil {
		t.Fatal(err)
	}
	if !snap.GetSent() {
		t.Fatalf("snapshot %v", snap)
	}
	recs := h.records()
	if len(recs) != 3 || recs[0].Open || !recs[1].Open || recs[2].Open {
		t.Fatalf("want osascript, open, osascript; got %+v", recs)
	}
}

// On macOS 26 `chat id any;-;x` fails with -1700: the iMessage spelling is
// tried next, then the participant.
func TestAnyGUIDFallback(t *testing.T) {
	t.Run("imessage-spelling", func(t *testing.T) {
		h := newHarness(t, []string{"FAKEOSA_REJECT=any"}, nil)
		snap, err := h.exec(textTo(chatAny, "via iMessage spelling"))
		if err != nil {
			t.Fatal(err)
		}
		if snap.GetChatGuid() != chatAny || !snap.GetSent() {
			t.Fatalf("snapshot %v", snap)
		}
		recs := h.records()
		if len(recs) != 2 || recs[0].Argv[1] != chatAny || recs[1].Argv[1] != "iMessage;-;+15551230002" || recs[1].Script != scriptTextToChat {
			t.Fatalf("runs %+v", recs)
		}
	})
	t.Run("participant", func(t *testing.T) {
		h := newHarness(t, []string{"FAKEOSA_REJECT=any,iMessage"}, nil)
		snap, err := h.exec(textTo(chatAny, "via participant"))
		if err != nil {
			t.Fatal(err)
		}
		if snap.GetChatGuid() != chatAny || !snap.GetSent() {
			t.Fatalf("snapshot %v", snap)
		}
		recs := h.records()
		if len(recs) != 3 || recs[2].Script != scriptTextToParticipant || recs[2].Argv[1] != "+15551230002" {
			t.Fatalf("runs %+v", recs)
		}
	})
	t.Run("group", func(t *testing.T) {
		h := newHarness(t, []string{"FAKEOSA_REJECT=any,iMessage"}, nil)
		_, err := h.exec(textTo(chatGroup, "to the group"))
		me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNSUPPORTED)
		if me.Capability != linev1.Capability_CAPABILITY_SEND_TEXT {
			t.Fatalf("capability %v", me.Capability)
		}
		if n := len(h.records()); n != 2 {
			t.Fatalf("want 2 runs (any, iMessage), got %d", n)
		}
	})
	t.Run("group-ok", func(t *testing.T) {
		h := newHarness(t, []string{"FAKEOSA_REJECT=any"}, nil)
		snap, err := h.exec(textTo(chatGroup, "to the group"))
		if err != nil || snap.GetChatGuid() != chatGroup {
			t.Fatalf("snapshot %v, %v", snap, err)
		}
	})
}

// A row with error > 0 is a typed failure carrying the code.
func TestRowError(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_ROW_ERROR=22"}, nil)
	_, err := h.exec(textTo(chatOne, "doomed"))
	me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_UNAVAILABLE)
	if !strings.Contains(me.Msg, "error 22") || !strings.Contains(me.LastState, "error=22") {
		t.Fatalf("error %v, last state %q", me, me.LastState)
	}
}

// Without a row, or with a row never sent, there is no success: the
// deadline passes with the last state seen.
func TestNoSuccessWithoutSentRow(t *testing.T) {
	for env, state := range map[string]string{
		"FAKEOSA_NO_ROW=1":  "no outgoing row",
		"FAKEOSA_NO_SENT=1": "is_sent=false",
	} {
		t.Run(env, func(t *testing.T) {
			h := newHarness(t, []string{env}, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
			defer cancel()
			_, err := h.sender.Execute(ctx, textTo(chatOne, "limbo"), func(*linev1.CommandUpdate) {})
			me := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED)
			if !strings.Contains(me.LastState, state) {
				t.Fatalf("last state %q lacks %q", me.LastState, state)
			}
		})
	}
}

// The Command's own deadline bounds the wait as well as the context's.
func TestCommandDeadline(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_NO_ROW=1"}, nil)
	cmd := textTo(chatOne, "limbo")
	cmd.Deadline = timestampAfter(time.Second)
	start := time.Now()
	_, err := h.sender.Execute(context.Background(), cmd, func(*linev1.CommandUpdate) {})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED)
	if time.Since(start) > 10*time.Second {
		t.Fatal("deadline not honoured")
	}
}

// The command's deadline passing while osascript hangs after Messages sent
// is not a failure: the row proves the send, so the command succeeds
// (a DEADLINE_EXCEEDED there would have the caller send it twice).
func TestDeadlineButRowSent(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_HANG_AFTER_SEND=1"}, nil)
	cmd := textTo(chatOne, "sent, then AppleScript hung")
	cmd.Deadline = timestampAfter(time.Second)
	snap, err := h.sender.Execute(context.Background(), cmd, func(*linev1.CommandUpdate) {})
	if err != nil {
		t.Fatalf("deadline with the row sent: %v, want success", err)
	}
	if !snap.GetSent() || h.rowText(snap.GetMessageGuid()) != "sent, then AppleScript hung" {
		t.Fatalf("snapshot %v", snap)
	}
}

// Sending the same text twice in a row reports two different rows: the first
// row is claimed and never matched again.
func TestSameTextTwice(t *testing.T) {
	h := newHarness(t, nil, nil)
	a, err := h.exec(textTo(chatOne, "same"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.exec(textTo(chatOne, "same"))
	if err != nil {
		t.Fatal(err)
	}
	if a.GetMessageGuid() == b.GetMessageGuid() {
		t.Fatalf("both sends reported row %s", a.GetMessageGuid())
	}
}

// Progress reaches the report callback.
func TestProgressReported(t *testing.T) {
	h := newHarness(t, nil, nil)
	var stages []string
	_, err := h.sender.Execute(context.Background(), textTo(chatOne, "progress"), func(u *linev1.CommandUpdate) {
		stages = append(stages, u.GetProgress().GetStage())
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(stages, "handed to Messages") {
		t.Fatalf("stages %v", stages)
	}
}

func TestNewNeedsChatDB(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without ChatDB succeeded")
	}
	s, err := New(Options{ChatDB: &chatdb.Reader{}})
	if err != nil {
		t.Fatal(err)
	}
	home, _ := os.UserHomeDir()
	if s.opts.StageDir != home+"/Pictures/line-agent-outbox" || s.opts.OsascriptPath != "/usr/bin/osascript" || s.opts.Timeout != 30*time.Second || s.opts.MaxAttachmentBytes != 100<<20 {
		t.Fatalf("defaults %+v", s.opts)
	}
}

// Cancellation after Messages accepted the send is IN_DOUBT, never a guess.
func TestCancelledIsInDoubt(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_NO_ROW=1"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	_, err := h.sender.Execute(ctx, textTo(chatOne, "limbo"), func(*linev1.CommandUpdate) {})
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_IN_DOUBT)
}

// osascript hanging after Messages sent: the run is killed, but the row
// proves the send, so the command succeeds truthfully.
func TestTimeoutButRowSent(t *testing.T) {
	h := newHarness(t, []string{"FAKEOSA_HANG_AFTER_SEND=1"}, func(o *Options) { o.Timeout = time.Second })
	snap, err := h.exec(textTo(chatOne, "slow answer"))
	if err != nil {
		t.Fatal(err)
	}
	if !snap.GetSent() || h.rowText(snap.GetMessageGuid()) != "slow answer" {
		t.Fatalf("snapshot %v", snap)
	}
}
