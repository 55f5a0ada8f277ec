package sim

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

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

// sendTo sends text to the one-to-one chat with handle, as the simulated
// helper does, and waits until it was delivered and handed to the remote
// people.
func sendTo(t *testing.T, m *Messages, handle, text string) Row {
	t.Helper()
	ctx := context.Background()
	chat, err := m.Store.EnsureChat(ctx, ChatSpec{Participants: []string{handle}})
	if err != nil {
		t.Fatal(err)
	}
	snd, err := m.Store.Send(ctx, chat, Msg{Text: text}, Outgoing{Deliver: m.Remote.Deliver})
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Err(); err != nil {
		t.Fatal(err)
	}
	return snd.Row()
}

// TestRemotePeopleReply runs the whole loop: a message is sent, the remote
// person reads, likes and replies, and the chatdb Tailer turns every row
// into an event.
func TestRemotePeopleReply(t *testing.T) {
	m, _ := newSim(t, Options{Remote: RemoteOptions{Script: func(_ *rand.Rand, who string, d Delivery) []Action {
		return []Action{{Read: true}, {Tapback: "like"}, {After: 5 * time.Millisecond, Reply: "got it: " + d.Text}}
	}}})
	ctx, cancel := context.WithCancel(context.Background())
	tl := chatdb.NewTailer(chatdb.TailerOptions{Path: m.ChatDBPath(), Logger: quiet})
	got := make(chan *linev1.Event, 64)
	baseline := make(chan struct{})
	var once sync.Once
	sink := chatdb.SinkFunc(func(ctx context.Context, evs []*linev1.Event, _ []byte) error {
		// The tailer's first commit is its starting cursor (the end of
		// chat.db): rows written after it are reported.
		once.Do(func() { close(baseline) })
		for _, e := range evs {
			select {
			case got <- e:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx, nil, sink) }()
	defer func() { cancel(); <-done }()
	select {
	case <-baseline:
	case <-time.After(10 * time.Second):
		t.Fatal("the tailer committed no starting cursor")
	}

	g := sendTo(t, m, "+15551234567", "ping").GUID
	want := map[string]func(*linev1.Event) bool{
		"message":   func(e *linev1.Event) bool { return e.GetKey() == g+"/message/0" && e.GetMessage().GetFromMe() },
		"sent":      func(e *linev1.Event) bool { return e.GetKey() == g+"/sent/0" },
		"delivered": func(e *linev1.Event) bool { return e.GetKey() == g+"/delivered/0" },
		"read":      func(e *linev1.Event) bool { return e.GetKey() == g+"/read/0" && e.GetRead().GetFromMe() },
		"tapback": func(e *linev1.Event) bool {
			return e.GetTapback().GetTargetMessageGuid() == g && e.GetTapback().GetTapback() == "like" && e.GetTapback().GetSender() == "+15551234567"
		},
		"reply": func(e *linev1.Event) bool {
			return e.GetMessage().GetText() == "got it: ping" && !e.GetMessage().GetFromMe() && e.GetMessage().GetSender() == "+15551234567"
		},
	}
	limit := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case e := <-got:
			maps.DeleteFunc(want, func(_ string, pred func(*linev1.Event) bool) bool { return pred(e) })
		case <-limit:
			t.Fatalf("no %v events", slices.Sorted(maps.Keys(want)))
		}
	}
}

// TestRemoteDeterministic: the same seed gives the same rows.
func TestRemoteDeterministic(t *testing.T) {
	run := func() []string {
		m, ro := newSim(t, Options{Seed: 42, Remote: RemoteOptions{Delay: time.Millisecond}})
		for i := 0; i < 6; i++ {
			sendTo(t, m, "+15551234567", strings.Repeat("x", i+1))
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
}

// An inbound photo asked for slowly is first a half-written file still
// transferring, then the whole file, finished: what a download that takes
// time looks like in chat.db.
func TestRemoteSendsAPhotoStillDownloadingThenWhole(t *testing.T) {
	ctx := context.Background()
	st, err := Create(filepath.Join(t.TempDir(), "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.EnsureChat(ctx, ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	r := NewRemote(ctx, st, RemoteOptions{Delay: 50 * time.Millisecond, Logger: quiet})
	defer r.Close()
	r.Deliver(Delivery{ChatGUID: c.GUID, MessageGUID: "M1", Text: SlowPhotoRequest, To: []string{"+15557654321"}})

	photo := SamplePhoto()
	state := func() (int, []byte) {
		var ts int
		var filename string
		err := st.db.QueryRowContext(ctx, `SELECT transfer_state, filename FROM attachment ORDER BY ROWID DESC LIMIT 1`).Scan(&ts, &filename)
		if err != nil {
			return -1, nil
		}
		data, _ := os.ReadFile(filepath.Join(st.AttachmentsDir(), filepath.FromSlash(strings.TrimPrefix(filename, attachmentsPrefix))))
		return ts, data
	}
	var sawPartial bool
	for i := 0; i < 400; i++ {
		ts, data := state()
		// The two reads are not one snapshot: the last piece and the
		// state's change may land between them, so a whole file beside a
		// transferring state proves nothing; a short file beside it is the
		// download in progress.
		if ts != -1 && ts != transferFinished && len(data) < len(photo) {
			sawPartial = true
		}
		if ts == transferFinished {
			if !bytes.Equal(data, photo) {
				t.Fatalf("finished file is %d bytes, want the %d-byte photo", len(data), len(photo))
			}
			if !sawPartial {
				t.Fatal("the photo never showed as a short file still transferring")
			}
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("the photo never finished transferring")
}
