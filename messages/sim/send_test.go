package sim

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"
)

// rowState reads what any reader of chat.db sees of an outgoing row.
type rowState struct {
	sent, delivered, fromMe, code int
	dateDelivered                 int64
	text                          sql.NullString
	effect                        sql.NullString
}

// newChat is a Store dated by the real clock (Send's servers write from
// their own goroutine) with a one-to-one chat.
func newChat(t *testing.T) (*Store, *sql.DB, Chat) {
	t.Helper()
	st, ro := newStore(t, WithClock(time.Now))
	chat, err := st.EnsureChat(context.Background(), ChatSpec{Participants: []string{"+15551234567"}})
	if err != nil {
		t.Fatal(err)
	}
	return st, ro, chat
}

func readRow(t *testing.T, ro *sql.DB, guid string) rowState {
	t.Helper()
	var r rowState
	if err := ro.QueryRow(`SELECT is_sent, is_delivered, is_from_me, error, date_delivered, text, expressive_send_style_id FROM message WHERE guid = ?`, guid).
		Scan(&r.sent, &r.delivered, &r.fromMe, &r.code, &r.dateDelivered, &r.text, &r.effect); err != nil {
		t.Fatal(err)
	}
	return r
}

// Send writes the row unsent at once, then the servers mark it sent and
// delivered in place, and only then is it handed to the people in the chat.
func TestSendMarksSentThenDelivered(t *testing.T) {
	ctx := context.Background()
	st, ro, chat := newChat(t)
	got := make(chan Delivery, 1)
	snd, err := st.Send(ctx, chat, Msg{Text: "hello", Effect: "slam"}, Outgoing{Latency: 100 * time.Millisecond, Deliver: func(d Delivery) { got <- d }})
	if err != nil {
		t.Fatal(err)
	}
	guid := snd.Row().GUID
	if r := readRow(t, ro, guid); r.sent != 0 || r.delivered != 0 || r.fromMe != 1 {
		t.Fatalf("just written: %+v", r)
	}
	select {
	case d := <-got:
		t.Fatalf("handed over before it was delivered: %+v", d)
	default:
	}
	if err := snd.Err(); err != nil {
		t.Fatal(err)
	}
	r := readRow(t, ro, guid)
	if r.sent != 1 || r.delivered != 1 || r.dateDelivered == 0 || r.code != 0 || r.text.Valid || r.effect.String != "com.apple.MobileSMS.expressivesend.impact" {
		t.Fatalf("delivered: %+v", r)
	}
	d := <-got
	if d.ChatGUID != chat.GUID || d.MessageGUID != guid || d.Text != "hello" || len(d.To) != 1 || d.To[0] != "+15551234567" || d.Group {
		t.Fatalf("delivery %+v", d)
	}
}

// A failing send ends with message.error set; a stuck one stays unsent; a
// stopped one (or one the Store's closing cuts short) stops where it was.
// None of them reaches the people in the chat.
func TestSendFailsSticksOrStops(t *testing.T) {
	ctx := context.Background()
	st, ro, chat := newChat(t)
	deliver := func(d Delivery) { t.Errorf("delivered %+v", d) }
	stopped := make(chan struct{})
	close(stopped)
	for name, c := range map[string]struct {
		o       Outgoing
		err     error
		sent    int
		errCode int
	}{
		"fail":  {o: Outgoing{FailCode: 22}, errCode: 22},
		"stuck": {o: Outgoing{Stuck: true, Latency: time.Hour}},
		"stop":  {o: Outgoing{Stop: stopped, Latency: time.Hour}, err: ErrSendStopped},
	} {
		c.o.Deliver = deliver
		snd, err := st.Send(ctx, chat, Msg{Text: name}, c.o)
		if err != nil {
			t.Fatal(err)
		}
		if err := snd.Err(); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", name, err, c.err)
		}
		if r := readRow(t, ro, snd.Row().GUID); r.sent != c.sent || r.delivered != 0 || r.code != c.errCode {
			t.Errorf("%s: row %+v", name, r)
		}
	}

	pending, err := st.Send(ctx, chat, Msg{Text: "quitting"}, Outgoing{Latency: 30 * time.Second, Deliver: deliver})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 10*time.Second {
		t.Error("Close waited for the servers instead of stopping them")
	}
	if err := pending.Err(); !errors.Is(err, ErrSendStopped) {
		t.Errorf("pending send after Close: %v", err)
	}
	if _, err := st.Send(ctx, chat, Msg{Text: "late"}, Outgoing{}); err == nil {
		t.Error("a closed Store sends")
	}
}

// Store.Chat finds a chat as Messages does: by its GUID, or under another
// service's spelling of it, the exact spelling first.
func TestChatUnderAnySpelling(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t)
	for _, g := range []string{"any;-;+15551230002", "iMessage;-;+15551230003", "any;-;+15551230003", "any;+;chat123456789012345678", "SMS;-;bob@example.com"} {
		spec := ChatSpec{GUID: g}
		if g[len(g)-1] == '8' {
			spec.Participants = []string{"+15551230005", "+15551230006"}
		}
		if _, err := st.EnsureChat(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	for ask, want := range map[string]string{
		"any;-;+15551230002":                "any;-;+15551230002",
		"iMessage;-;+15551230002":           "any;-;+15551230002",
		"SMS;-;+15551230002":                "any;-;+15551230002",
		"iMessage;-;+15551230003":           "iMessage;-;+15551230003",
		"any;-;+15551230003":                "any;-;+15551230003",
		"iMessage;+;chat123456789012345678": "any;+;chat123456789012345678",
		"iMessage;-;Bob@Example.com":        "SMS;-;bob@example.com",
	} {
		if c, err := st.Chat(ctx, ask); err != nil || c.GUID != want {
			t.Errorf("Chat(%s): %q %v, want %s", ask, c.GUID, err, want)
		}
	}
	for _, ask := range []string{"iMessage;-;+15559999999", "iMessage;+;+15551230002", "any;-;chat123456789012345678", "+15551230002", ""} {
		if c, err := st.Chat(ctx, ask); !errors.Is(err, ErrNoChat) {
			t.Errorf("Chat(%q): %+v %v, want ErrNoChat", ask, c, err)
		}
	}
}
