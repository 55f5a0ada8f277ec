package main

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

const (
	e2eLine = "+15550000001"
	e2ePeer = "+15557654321"
	e2eChat = "iMessage;-;" + e2ePeer
)

var pngBytes = append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 64)...)

// signedPath is a URL's path and query with secrets no error may repeat.
const signedPath = "/SECRETPATHSEG/cat.png?sig=SECRETSIG123"

// e2e is a relay, an agent with the sim backend (simulated Messages, bridge,
// simulated helper) and a read-only view of the simulated chat.db.
type e2e struct {
	t      *testing.T
	relay  *relay.Server
	m      *sim.Messages
	helper *simhelper.Helper
	db     *sql.DB
	files  *httptest.Server
	// dataDir is the agent's data directory.
	dataDir string
}

// fileServer serves /cat.png, /files/<anything> (the same picture),
// /missing (404), /hang (never finishes) and /slow (1.5 s) over TLS.
func fileServer(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/cat.png", func(w http.ResponseWriter, _ *http.Request) { w.Write(pngBytes) })
	mux.HandleFunc("/files/", func(w http.ResponseWriter, _ *http.Request) { w.Write(pngBytes) })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(200)
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(1500 * time.Millisecond):
		}
		w.Write(pngBytes)
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// startE2E starts everything; lines, when given, is the agent's configured
// lines (default: the simulated account's).
func startE2E(t *testing.T, setup simSetup, lines ...string) *e2e {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := relay.New(relay.Options{DataDir: t.TempDir(), GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		HeartbeatInterval: 200 * time.Millisecond, HealthCheckInterval: 200 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tok, err := srv.CreateProjectToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	if _, err := agent.Enroll(ctx, agent.EnrollOptions{DialOptions: agent.DialOptions{Addr: srv.GRPCAddr(), CAFile: srv.CAFile()}, Token: tok, DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	h := &e2e{t: t, relay: srv, files: fileServer(t), dataDir: dataDir}
	if setup.HTTPClient == nil {
		setup.HTTPClient = h.files.Client()
	}
	// The file server is on 127.0.0.1: loopback is allowed, for these
	// tests only (TestSimBackendRefusesLoopbackURLs keeps the default).
	setup.AllowLoopbackForTests = true
	setup.Messages = func(m *sim.Messages) { h.m = m }
	setup.Helper = func(x *simhelper.Helper) { h.helper = x }
	cfg := agent.Config{DataDir: dataDir, Driver: "sim", SimLine: e2eLine, SimLatency: 5 * time.Millisecond,
		SimReplyDelay: time.Hour, // the simulated people stay silent: every row is the test's
		Lines:         lines, MaxChats: 4, MaxQueued: 64, MaxOutbox: 1000, ShutdownGrace: 5 * time.Second,
		BackoffBase: 50 * time.Millisecond, BackoffCap: time.Second}
	be, err := openSim(ctx, cfg, log, setup)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: be, Logger: log})
	if err != nil {
		be.Close()
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx, stop) }()
	t.Cleanup(func() {
		close(stop)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
	db, err := sql.Open("sqlite", "file:"+h.m.ChatDBPath()+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h.db = db
	h.waitAgent(func(v relay.AgentView) bool { return v.Connected })
	return h
}

func (h *e2e) waitAgent(ok func(relay.AgentView) bool) relay.AgentView {
	h.t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		as, err := h.relay.Agents(context.Background())
		if err == nil && len(as) == 1 && ok(as[0]) {
			return as[0]
		}
	}
	as, _ := h.relay.Agents(context.Background())
	h.t.Fatalf("agent state not reached: %+v", as)
	return relay.AgentView{}
}

var cmdSeq int

// cmd builds a command for the chat (or participants when chat has no ';').
func cmd(target string, kind any) *linev1.Command {
	cmdSeq++
	c := &linev1.Command{Id: "e2e-" + itoa(cmdSeq), Line: e2eLine,
		Deadline: timestamppb.New(time.Now().Add(20 * time.Second))}
	switch {
	case strings.Contains(target, ";"):
		c.Target = &linev1.Command_ChatGuid{ChatGuid: target}
	case target != "":
		c.Target = &linev1.Command_Participants{Participants: &linev1.Participants{Handles: strings.Split(target, ",")}}
	}
	switch k := kind.(type) {
	case *linev1.SendText:
		c.Kind = &linev1.Command_SendText{SendText: k}
	case *linev1.SendAttachment:
		c.Kind = &linev1.Command_SendAttachment{SendAttachment: k}
	case *linev1.Typing:
		c.Kind = &linev1.Command_Typing{Typing: k}
	case *linev1.React:
		c.Kind = &linev1.Command_React{React: k}
	case *linev1.Edit:
		c.Kind = &linev1.Command_Edit{Edit: k}
	case *linev1.Unsend:
		c.Kind = &linev1.Command_Unsend{Unsend: k}
	case *linev1.MarkRead:
		c.Kind = &linev1.Command_MarkRead{MarkRead: k}
	case *linev1.CreateChat:
		c.Kind = &linev1.Command_CreateChat{CreateChat: k}
	case *linev1.RenameGroup:
		c.Kind = &linev1.Command_RenameGroup{RenameGroup: k}
	case *linev1.LookupHandle:
		c.Kind = &linev1.Command_LookupHandle{LookupHandle: k}
	}
	return c
}

func itoa(n int) string { return strconv.Itoa(n) }

func (h *e2e) submit(c *linev1.Command) {
	h.t.Helper()
	if _, err := h.relay.SubmitCommand(context.Background(), c); err != nil {
		h.t.Fatal(err)
	}
}

func (h *e2e) final(id string, limit time.Duration) *relay.CommandView {
	h.t.Helper()
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		v, err := h.relay.CommandView(id)
		if err == nil && (v.State == "succeeded" || v.State == "failed") {
			return v
		}
	}
	v, _ := h.relay.CommandView(id)
	h.t.Fatalf("command %s not final in %v: %+v", id, limit, v)
	return nil
}

// ok runs c and returns its snapshot, failing unless it succeeded.
func (h *e2e) ok(c *linev1.Command) *linev1.Snapshot {
	h.t.Helper()
	h.submit(c)
	v := h.final(c.Id, 20*time.Second)
	if v.State != "succeeded" {
		h.t.Fatalf("%s %s: %s %+v", c.Id, v.Kind, v.State, v.Error)
	}
	s := &linev1.Snapshot{}
	if err := protojson.Unmarshal(v.Result, s); err != nil {
		h.t.Fatal(err)
	}
	return s
}

// counts is what "nothing was sent" compares: rows, chats, edits, unsends
// and names.
func (h *e2e) counts() string {
	h.t.Helper()
	var rows, chats, edited, retracted int
	var names string
	err := h.db.QueryRow(`SELECT (SELECT count(*) FROM message), (SELECT count(*) FROM chat),
		(SELECT count(*) FROM message WHERE date_edited > 0), (SELECT count(*) FROM message WHERE date_retracted > 0),
		(SELECT coalesce(group_concat(coalesce(display_name, ''), '|'), '') FROM chat)`).Scan(&rows, &chats, &edited, &retracted, &names)
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Join([]string{itoa(rows), itoa(chats), itoa(edited), itoa(retracted), names}, "/")
}

func (h *e2e) col(guid, expr string) string {
	h.t.Helper()
	var s sql.NullString
	if err := h.db.QueryRow(`SELECT CAST(`+expr+` AS TEXT) FROM message WHERE guid = ?`, guid).Scan(&s); err != nil {
		h.t.Fatalf("%s of %s: %v", expr, guid, err)
	}
	return s.String
}

// truthful checks that a snapshot names a sent row chat.db really holds.
func (h *e2e) truthful(s *linev1.Snapshot, chat string) {
	h.t.Helper()
	if s.GetMessageGuid() == "" || !s.GetSent() || s.GetDate() == nil || (chat != "" && s.GetChatGuid() != chat) {
		h.t.Fatalf("snapshot not truthful: %v", s)
	}
	if h.col(s.GetMessageGuid(), "is_from_me") != "1" || h.col(s.GetMessageGuid(), "is_sent") != "1" {
		h.t.Fatalf("row %s is not a sent row of ours", s.GetMessageGuid())
	}
}

// incoming writes a message from the peer and returns its GUID.
func (h *e2e) incoming(text string) string {
	h.t.Helper()
	row, err := h.m.Remote.Say(context.Background(), e2ePeer, text)
	if err != nil {
		h.t.Fatal(err)
	}
	return row.GUID
}

func TestEveryCommandKindEndToEnd(t *testing.T) {
	h := startE2E(t, simSetup{Unreachable: []string{"+15550001111"}, MaxAttachmentBytes: 1024, FetchTimeout: 300 * time.Millisecond})
	caps := h.waitAgent(func(v relay.AgentView) bool { return len(v.Capabilities) > 0 }).Capabilities
	for _, want := range []string{"send_text", "send_attachment", "typing", "react", "edit", "unsend", "mark_read",
		"create_chat", "rename_group", "lookup_handle", "effect", "reply", "subject"} {
		if !slices.Contains(caps, want) {
			t.Errorf("Hello lacks %s: %v", want, caps)
		}
	}
	for _, want := range []string{"set_background", "clear_background"} {
		if !slices.Contains(caps, want) {
			t.Errorf("Hello lacks %s, which the simulated helper does", want)
		}
	}

	first := h.ok(cmd(e2ePeer, &linev1.SendText{Text: "hello"}))
	h.truthful(first, e2eChat)

	t.Run("send_text effect reply subject", func(t *testing.T) {
		s := h.ok(cmd(e2eChat, &linev1.SendText{Text: "boom", Effect: "slam", Subject: "re", ReplyTo: &linev1.ReplyTo{MessageGuid: first.GetMessageGuid()}}))
		h.truthful(s, e2eChat)
		if got := h.col(s.GetMessageGuid(), "expressive_send_style_id"); got != "com.apple.MobileSMS.expressivesend.impact" {
			t.Errorf("effect %q", got)
		}
		if h.col(s.GetMessageGuid(), "subject") != "re" || h.col(s.GetMessageGuid(), "thread_originator_guid") != first.GetMessageGuid() {
			t.Errorf("subject or reply not written")
		}
	})
	t.Run("send_attachment bytes and url", func(t *testing.T) {
		s := h.ok(cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: pngBytes}, FileName: "cat.png", MimeType: "image/png"}))
		h.truthful(s, e2eChat)
		u := h.ok(cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: h.files.URL + "/cat.png"}}))
		h.truthful(u, e2eChat)
		for _, g := range []string{s.GetMessageGuid(), u.GetMessageGuid()} {
			if h.col(g, "cache_has_attachments") != "1" {
				t.Errorf("%s has no attachment", g)
			}
		}
	})
	t.Run("typing", func(t *testing.T) {
		before := h.counts()
		h.ok(cmd(e2eChat, &linev1.Typing{On: true}))
		h.ok(cmd(e2eChat, &linev1.Typing{On: false}))
		if after := h.counts(); after != before {
			t.Errorf("typing wrote rows: %s -> %s", before, after)
		}
	})
	t.Run("react", func(t *testing.T) {
		target := h.incoming("react to me")
		for i, tb := range []string{"love", "like", "dislike", "laugh", "emphasize", "question"} {
			s := h.ok(cmd(e2eChat, &linev1.React{MessageGuid: target, Reaction: &linev1.React_Tapback{Tapback: tb}}))
			if h.col(s.GetMessageGuid(), "associated_message_type") != itoa(2000+i) || h.col(s.GetMessageGuid(), "associated_message_guid") != "p:0/"+target {
				t.Errorf("%s: wrong tapback row", tb)
			}
		}
		s := h.ok(cmd(e2eChat, &linev1.React{MessageGuid: target, Remove: true, Reaction: &linev1.React_Tapback{Tapback: "question"}}))
		if h.col(s.GetMessageGuid(), "associated_message_type") != "3005" {
			t.Errorf("removal row not 3005")
		}
		s = h.ok(cmd(e2eChat, &linev1.React{MessageGuid: target, Reaction: &linev1.React_Emoji{Emoji: "🔥"}}))
		if h.col(s.GetMessageGuid(), "associated_message_type") != "2006" || h.col(s.GetMessageGuid(), "associated_message_emoji") != "🔥" {
			t.Errorf("emoji tapback row wrong")
		}
		s = h.ok(cmd(e2eChat, &linev1.React{MessageGuid: target, Remove: true, Reaction: &linev1.React_Emoji{Emoji: "🔥"}}))
		if h.col(s.GetMessageGuid(), "associated_message_type") != "3006" {
			t.Errorf("emoji removal row wrong")
		}
	})
	t.Run("edit and unsend", func(t *testing.T) {
		s := h.ok(cmd(e2eChat, &linev1.Edit{MessageGuid: first.GetMessageGuid(), Text: "hello, edited"}))
		if s.GetMessageGuid() != first.GetMessageGuid() || h.col(first.GetMessageGuid(), "date_edited") == "0" {
			t.Errorf("edit not shown: %v", s)
		}
		victim := h.ok(cmd(e2eChat, &linev1.SendText{Text: "oops"}))
		h.ok(cmd(e2eChat, &linev1.Unsend{MessageGuid: victim.GetMessageGuid()}))
		if h.col(victim.GetMessageGuid(), "date_retracted") == "0" {
			t.Errorf("unsend not shown")
		}
	})
	t.Run("mark_read", func(t *testing.T) {
		g := h.incoming("unread")
		h.ok(cmd(e2eChat, &linev1.MarkRead{}))
		if h.col(g, "is_read") != "1" {
			t.Errorf("incoming not read")
		}
	})
	t.Run("create_chat and rename_group", func(t *testing.T) {
		one := h.ok(cmd("", &linev1.CreateChat{Participants: []string{"+15557650002"}, FirstMessage: "hi new"}))
		h.truthful(one, "iMessage;-;+15557650002")
		grp := h.ok(cmd("", &linev1.CreateChat{Participants: []string{"+15557650003", "friend@example.com"}, Name: "Team", FirstMessage: "welcome"}))
		h.truthful(grp, "")
		if !strings.Contains(grp.GetChatGuid(), ";+;") {
			t.Fatalf("group chat guid %q", grp.GetChatGuid())
		}
		var name string
		if err := h.db.QueryRow(`SELECT display_name FROM chat WHERE guid = ?`, grp.GetChatGuid()).Scan(&name); err != nil || name != "Team" {
			t.Errorf("group name %q %v", name, err)
		}
		h.ok(cmd(grp.GetChatGuid(), &linev1.RenameGroup{Name: "Team 2"}))
		if err := h.db.QueryRow(`SELECT display_name FROM chat WHERE guid = ?`, grp.GetChatGuid()).Scan(&name); err != nil || name != "Team 2" {
			t.Errorf("renamed to %q %v", name, err)
		}
	})
	t.Run("create_chat without first_message", func(t *testing.T) {
		// The simulated helper announces create-chat-empty: the chat row is
		// written and nothing is sent into it.
		messageRows := func() int {
			var n int
			if err := h.db.QueryRow(`SELECT count(*) FROM message`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		chatRow := func(guid string) (name string, texts int) {
			var dn sql.NullString
			err := h.db.QueryRow(`SELECT c.display_name, (SELECT count(*) FROM chat_message_join j JOIN message m ON m.ROWID = j.message_id
				WHERE j.chat_id = c.ROWID AND m.item_type = 0) FROM chat c WHERE c.guid = ?`, guid).Scan(&dn, &texts)
			if err != nil {
				t.Fatalf("chat row %s: %v", guid, err)
			}
			return dn.String, texts
		}
		before := messageRows()
		one := h.ok(cmd("", &linev1.CreateChat{Participants: []string{"+15557650004"}}))
		if one.GetChatGuid() != "iMessage;-;+15557650004" || one.GetMessageGuid() != "" || one.GetSent() {
			t.Fatalf("one-to-one snapshot %v", one)
		}
		if _, texts := chatRow(one.GetChatGuid()); texts != 0 || messageRows() != before {
			t.Fatalf("a message was written: %d in the chat, %d -> %d rows", texts, before, messageRows())
		}
		grp := h.ok(cmd("", &linev1.CreateChat{Participants: []string{"+15557650005", "crew@example.com"}, Name: "Crew"}))
		if !strings.Contains(grp.GetChatGuid(), ";+;") || grp.GetMessageGuid() != "" {
			t.Fatalf("group snapshot %v", grp)
		}
		// Naming the group writes its item_type 2 announcement row, as
		// Messages does; no message is sent.
		if name, texts := chatRow(grp.GetChatGuid()); name != "Crew" || texts != 0 {
			t.Fatalf("group named %q with %d messages", name, texts)
		}
		bare := h.ok(cmd("", &linev1.CreateChat{Participants: []string{"+15557650006", "bare@example.com"}}))
		if _, texts := chatRow(bare.GetChatGuid()); texts != 0 || bare.GetMessageGuid() != "" || !strings.Contains(bare.GetChatGuid(), ";+;") {
			t.Fatalf("unnamed group %v with %d messages", bare, texts)
		}
		if after := messageRows(); after != before+1 { // the rename row only
			t.Fatalf("message rows %d -> %d", before, after)
		}
	})
	t.Run("lookup_handle", func(t *testing.T) {
		if s := h.ok(cmd("", &linev1.LookupHandle{Handle: "+15557650009"})); !s.GetReachable() {
			t.Errorf("reachable handle not reachable")
		}
		if s := h.ok(cmd("", &linev1.LookupHandle{Handle: "+15550001111"})); s.GetReachable() {
			t.Errorf("unreachable handle reachable")
		}
	})

	// Bad input: a typed error and nothing sent.
	old, err := h.m.Store.Insert(context.Background(), sim.Msg{Chat: e2eChat, FromMe: true, Sent: true, Text: "long ago", Date: time.Now().Add(-3 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	theirs := h.incoming("mine, not yours")
	bad := []struct {
		name string
		c    *linev1.Command
		code string
	}{
		{"unknown effect", cmd(e2eChat, &linev1.SendText{Text: "x", Effect: "explode"}), "INVALID_ARGUMENT"},
		{"unknown tapback", cmd(e2eChat, &linev1.React{MessageGuid: theirs, Reaction: &linev1.React_Tapback{Tapback: "hate"}}), "INVALID_ARGUMENT"},
		{"empty text", cmd(e2eChat, &linev1.SendText{Text: ""}), "INVALID_ARGUMENT"},
		{"blank text", cmd(e2eChat, &linev1.SendText{Text: " \n\t"}), "INVALID_ARGUMENT"},
		{"text over limit", cmd(e2eChat, &linev1.SendText{Text: strings.Repeat("a", 64<<10+1)}), "INVALID_ARGUMENT"},
		{"attachment over cap", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: append(slices.Clone(pngBytes), make([]byte, 4096)...)}, FileName: "big.png"}), "INVALID_ARGUMENT"},
		{"forbidden type by name", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: []byte("echo hi")}, FileName: "run.sh"}), "INVALID_ARGUMENT"},
		{"forbidden type by content", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Data{Data: []byte("\x7fELF\x02\x01")}, FileName: "cat.png"}), "INVALID_ARGUMENT"},
		{"url not https", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: "http://127.0.0.1/cat.png"}}), "INVALID_ARGUMENT"},
		{"url 404", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: h.files.URL + "/missing.png"}}), "INVALID_ARGUMENT"},
		{"url never finishes", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: h.files.URL + "/hang"}}), "INVALID_ARGUMENT"},
		{"signed url not https", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: "http://127.0.0.1" + signedPath}}), "INVALID_ARGUMENT"},
		{"signed url 404", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: h.files.URL + signedPath}}), "INVALID_ARGUMENT"},
		{"signed url named like a program", cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: h.files.URL + "/files/SECRETPATHSEG/run.command?sig=SECRETSIG123"}}), "INVALID_ARGUMENT"},
		{"unknown chat", cmd("iMessage;-;+15559999999", &linev1.SendText{Text: "anyone?"}), "NOT_FOUND"},
		{"malformed phone", cmd("+1555abc", &linev1.SendText{Text: "x"}), "INVALID_ARGUMENT"},
		{"malformed email", cmd("", &linev1.CreateChat{Participants: []string{"someone@"}, FirstMessage: "x"}), "INVALID_ARGUMENT"},
		{"edit after window", cmd(e2eChat, &linev1.Edit{MessageGuid: old.GUID, Text: "too late"}), "INVALID_ARGUMENT"},
		{"unsend after window", cmd(e2eChat, &linev1.Unsend{MessageGuid: old.GUID}), "INVALID_ARGUMENT"},
		{"unsend someone else's", cmd(e2eChat, &linev1.Unsend{MessageGuid: theirs}), "INVALID_ARGUMENT"},
		{"edit someone else's", cmd(e2eChat, &linev1.Edit{MessageGuid: theirs, Text: "mine now"}), "INVALID_ARGUMENT"},
		{"tapback on missing message", cmd(e2eChat, &linev1.React{MessageGuid: "NO-SUCH-GUID", Reaction: &linev1.React_Tapback{Tapback: "love"}}), "NOT_FOUND"},
		{"rename unknown group", cmd("iMessage;+;chat000000", &linev1.RenameGroup{Name: "x"}), "NOT_FOUND"},
	}
	for _, tc := range bad {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			before := h.counts()
			// A bad command is refused at the first door it reaches: the
			// relay's submit (bounds, caps) or the agent, with the same code.
			var code, msg string
			if _, err := h.relay.SubmitCommand(context.Background(), tc.c); err != nil {
				var me *command.Error
				if !errors.As(err, &me) {
					t.Fatalf("submit: %v", err)
				}
				code, msg = command.CodeName(me.Code), me.Msg
			} else {
				v := h.final(tc.c.Id, 10*time.Second)
				if v.State != "failed" || v.Error == nil {
					t.Fatalf("want %s, got %s %+v", tc.code, v.State, v.Error)
				}
				code, msg = v.Error.Code, v.Error.Message
			}
			if code != tc.code {
				t.Fatalf("want %s, got %s: %s", tc.code, code, msg)
			}
			if strings.Contains(msg, "SECRET") || strings.Contains(msg, "sig=") {
				t.Errorf("the error repeats a url's path or query: %q", msg)
			}
			time.Sleep(20 * time.Millisecond) // a stray send would be visible by now
			if after := h.counts(); after != before {
				t.Errorf("something was sent: %s -> %s", before, after)
			}
		})
	}
}

func TestDispatchOrderConcurrencyDeadlineMisrouted(t *testing.T) {
	// The agent is configured for a second line its Messages account does
	// not have: the relay routes it here, and the agent must refuse.
	h := startE2E(t, simSetup{FetchTimeout: 10 * time.Second}, e2eLine, "+15550009999")
	h.ok(cmd(e2ePeer, &linev1.SendText{Text: "start"}))
	other := h.ok(cmd("+15557650100", &linev1.SendText{Text: "start"})).GetChatGuid()

	t.Run("one chat in order", func(t *testing.T) {
		var ids []string
		for i := range 6 {
			c := cmd(e2eChat, &linev1.SendText{Text: "n" + itoa(i)})
			h.submit(c)
			ids = append(ids, c.Id)
		}
		var last int64
		for _, id := range ids {
			v := h.final(id, 20*time.Second)
			s := &linev1.Snapshot{}
			if v.State != "succeeded" || protojson.Unmarshal(v.Result, s) != nil {
				t.Fatalf("%s: %+v", id, v)
			}
			var rowid int64
			if err := h.db.QueryRow(`SELECT ROWID FROM message WHERE guid = ?`, s.GetMessageGuid()).Scan(&rowid); err != nil {
				t.Fatal(err)
			}
			if rowid <= last {
				t.Fatalf("command %s ran out of order (row %d after %d)", id, rowid, last)
			}
			last = rowid
		}
	})
	t.Run("a slow chat does not block another", func(t *testing.T) {
		slow := cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: h.files.URL + "/slow"}})
		h.submit(slow)
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		h.ok(cmd(other, &linev1.SendText{Text: "not waiting"}))
		if took := time.Since(start); took > time.Second {
			t.Errorf("the other chat waited %v", took)
		}
		if v, _ := h.relay.CommandView(slow.Id); v.State == "succeeded" || v.State == "failed" {
			t.Errorf("the slow command finished first (%s): the test proves nothing", v.State)
		}
		if v := h.final(slow.Id, 10*time.Second); v.State != "succeeded" {
			t.Errorf("slow: %+v", v.Error)
		}
	})
	t.Run("deadline honoured", func(t *testing.T) {
		c := cmd(e2eChat, &linev1.SendAttachment{Source: &linev1.SendAttachment_Url{Url: h.files.URL + "/hang"}})
		c.Deadline = timestamppb.New(time.Now().Add(500 * time.Millisecond))
		before := h.counts()
		start := time.Now()
		h.submit(c)
		v := h.final(c.Id, 5*time.Second)
		if v.State != "failed" || v.Error.Code != "DEADLINE_EXCEEDED" {
			t.Fatalf("want DEADLINE_EXCEEDED, got %s %+v", v.State, v.Error)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("deadline of 500ms answered after %v", took)
		}
		if after := h.counts(); after != before {
			t.Errorf("sent anyway: %s -> %s", before, after)
		}
	})
	t.Run("misrouted", func(t *testing.T) {
		c := cmd(e2eChat, &linev1.SendText{Text: "wrong line"})
		c.Line = "+15550009999"
		before := h.counts()
		h.submit(c)
		v := h.final(c.Id, 5*time.Second)
		if v.State != "failed" || v.Error.Code != "MISROUTED" {
			t.Fatalf("want MISROUTED, got %s %+v", v.State, v.Error)
		}
		if after := h.counts(); after != before {
			t.Errorf("sent anyway: %s -> %s", before, after)
		}
	})
}

func TestWithoutHelperCommandsFailAtOnce(t *testing.T) {
	h := startE2E(t, simSetup{NoHelper: true})
	v := h.waitAgent(func(v relay.AgentView) bool { return v.Connected })
	// Only what needs no helper: an inbound attachment is read from the
	// attachments folder.
	if !slices.Equal(v.Capabilities, []string{"fetch_attachment"}) {
		t.Errorf("Hello advertises %v without a helper, want only fetch_attachment", v.Capabilities)
	}
	if _, err := h.m.Store.EnsureChat(context.Background(), sim.ChatSpec{Participants: []string{e2ePeer}}); err != nil {
		t.Fatal(err)
	}
	target := h.incoming("hi")
	for _, tc := range []struct {
		c   *linev1.Command
		cap string
	}{
		{cmd(e2eChat, &linev1.Typing{On: true}), "typing"},
		{cmd(e2eChat, &linev1.React{MessageGuid: target, Reaction: &linev1.React_Tapback{Tapback: "love"}}), "react"},
		{cmd(e2eChat, &linev1.SendText{Text: "hi"}), "send_text"},
	} {
		before := h.counts()
		start := time.Now()
		h.submit(tc.c)
		v := h.final(tc.c.Id, 5*time.Second)
		if v.State != "failed" || (v.Error.Code != "UNSUPPORTED" && v.Error.Code != "HELPER_UNAVAILABLE") {
			t.Fatalf("%s: want UNSUPPORTED or HELPER_UNAVAILABLE, got %s %+v", tc.cap, v.State, v.Error)
		}
		if v.Error.Code == "UNSUPPORTED" && v.Error.Capability != tc.cap {
			t.Errorf("%s: names capability %q", tc.cap, v.Error.Capability)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: failed only after %v", tc.cap, took)
		}
		if after := h.counts(); after != before {
			t.Errorf("%s: sent anyway", tc.cap)
		}
	}
}
