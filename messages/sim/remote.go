package sim

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
)

// Action is one thing a remote person does after receiving a message. The
// actions of one delivery run in order, each After its predecessor.
type Action struct {
	// After is the pause before this action.
	After time.Duration
	// Read marks the received message read (a read receipt on our row).
	Read bool
	// Tapback reacts to the received message ("love", "like", ...).
	Tapback string
	// Reply sends this text back into the chat.
	Reply string
	// Photo sends Photo back as an image attachment. With Arriving > 0
	// the row first shows the file still transferring (half of it
	// written), and the transfer finishes Arriving later, as Messages
	// records a download that takes time.
	Photo    []byte
	Arriving time.Duration
}

// PhotoRequest and SlowPhotoRequest are what a message says to make the
// default remote person answer with a picture (SamplePhoto) instead of
// text: at once, or still downloading for a while. Tests and the demo
// use them to get inbound attachments; nobody else says them by chance.
const (
	PhotoRequest     = "photo please"
	SlowPhotoRequest = "slow photo please"
)

// SamplePhoto is the picture the default remote person sends: a small PNG
// (a 1×1 pixel padded with a text chunk so that it takes several download
// chunks' worth of bytes when asked for in small pieces).
func SamplePhoto() []byte {
	head := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89")
	tail := []byte("\x00\x00\x00\rIDATx\xdac\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x02\x01\xa5\xd2\xe3\xc3\x00\x00\x00\x00IEND\xaeB`\x82")
	return append(head, tail...)
}

// Script decides how a remote person (who) reacts to a delivery. rnd is the
// seeded generator of the Remote, so a script that draws from it is
// reproducible.
type Script func(rnd *rand.Rand, who string, d Delivery) []Action

// EchoScript is the default remote person: after a short pause they reply
// "got it: <text>"; half of the time they read the message first, and a
// third of the time they also like it. Asked for a photo (PhotoRequest,
// SlowPhotoRequest) they send SamplePhoto instead.
func EchoScript(delay time.Duration) Script {
	return func(rnd *rand.Rand, who string, d Delivery) []Action {
		switch d.Text {
		case PhotoRequest:
			return []Action{{After: delay, Photo: SamplePhoto()}}
		case SlowPhotoRequest:
			return []Action{{After: delay, Photo: SamplePhoto(), Arriving: 4 * delay}}
		}
		var out []Action
		if rnd.IntN(2) == 0 {
			out = append(out, Action{After: delay / 2, Read: true})
		}
		if rnd.IntN(3) == 0 {
			out = append(out, Action{After: delay / 4, Tapback: "like"})
		}
		return append(out, Action{After: delay, Reply: "got it: " + d.Text})
	}
}

// RemoteOptions configure the people at the other end.
type RemoteOptions struct {
	// Handles are the people who answer; empty means every participant of
	// the chat the line writes to. A handle not listed stays silent.
	Handles []string
	// Script decides what they do; nil means EchoScript(Delay).
	Script Script
	// Delay is the default script's pause before replying (default 20ms).
	Delay time.Duration
	// Seed seeds the script's generator (same seed, same choices).
	Seed uint64
	// Queue bounds the deliveries waiting to be answered (default 256);
	// beyond it deliveries are dropped with a warning rather than blocking
	// sends.
	Queue int
	// Disabled makes everybody silent.
	Disabled bool
	Logger   *slog.Logger
}

// Remote plays the people the line talks to: it receives every successful
// send and writes their replies, tapbacks and read receipts into chat.db as
// incoming rows (is_from_me 0, handle_id set), as Messages records what
// arrives from the network. One goroutine handles deliveries in order, so
// with a fixed seed the rows come out the same every run.
type Remote struct {
	store *Store
	opts  RemoteOptions
	rnd   *rand.Rand
	in    chan Delivery
	log   *slog.Logger

	pending atomic.Int64 // deliveries queued or being acted on
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	once    sync.Once
}

// NewRemote starts the remote people writing into store. Stop them with
// Close.
func NewRemote(ctx context.Context, store *Store, opts RemoteOptions) *Remote {
	if opts.Delay <= 0 {
		opts.Delay = 20 * time.Millisecond
	}
	if opts.Script == nil {
		opts.Script = EchoScript(opts.Delay)
	}
	if opts.Queue <= 0 {
		opts.Queue = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Remote{store: store, opts: opts, rnd: rand.New(rand.NewPCG(opts.Seed, opts.Seed+1)), in: make(chan Delivery, opts.Queue), log: opts.Logger, cancel: cancel}
	r.wg.Add(1)
	go r.run(ctx)
	return r
}

// Deliver hands an outgoing message to the people in its chat. It never
// blocks: when the queue is full the delivery is dropped and logged.
func (r *Remote) Deliver(d Delivery) {
	if r.opts.Disabled {
		return
	}
	r.pending.Add(1)
	select {
	case r.in <- d:
	default:
		r.pending.Add(-1)
		r.log.Warn("sim: remote people are behind; a delivery was dropped", "message", d.MessageGUID)
	}
}

// Settle waits until every delivery handed over so far has been acted on,
// so a test (or a demo script) can take turns with the remote people and
// get the same rows in the same order every run.
func (r *Remote) Settle(ctx context.Context) error {
	for r.pending.Load() > 0 {
		if err := pause(ctx, time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the remote people and waits for them.
func (r *Remote) Close() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
}

func (r *Remote) run(ctx context.Context) {
	defer r.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case d := <-r.in:
			for _, who := range d.To {
				if len(r.opts.Handles) > 0 && !slices.ContainsFunc(r.opts.Handles, func(h string) bool { return command.NormalizeLine(h) == command.NormalizeLine(who) }) {
					continue
				}
				if err := r.act(ctx, who, d); err != nil {
					if ctx.Err() != nil {
						return
					}
					r.log.Warn("sim: remote person failed to act", "who", who, "err", err)
				}
			}
			r.pending.Add(-1)
		}
	}
}

func (r *Remote) act(ctx context.Context, who string, d Delivery) error {
	for _, a := range r.opts.Script(r.rnd, who, d) {
		if err := pause(ctx, a.After); err != nil {
			return err
		}
		switch {
		case a.Read:
			if err := r.store.MarkRead(ctx, d.MessageGUID); err != nil {
				return err
			}
		case a.Tapback != "":
			t, err := effects.LookupTapback(a.Tapback)
			if err != nil {
				r.log.Warn("sim: a script's tapback is not one of Apple's", "err", err)
				continue
			}
			if _, err := r.store.Insert(ctx, Msg{Chat: d.ChatGUID, Sender: who, Tapback: &Tapback{Target: d.MessageGUID, Code: t.Code}}); err != nil {
				return err
			}
		case a.Reply != "":
			if _, err := r.store.Insert(ctx, Msg{Chat: d.ChatGUID, Sender: who, Text: a.Reply}); err != nil {
				return err
			}
		case a.Photo != nil:
			if err := r.sendPhoto(ctx, who, d.ChatGUID, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendPhoto writes an incoming picture, still transferring first when
// a.Arriving is set.
func (r *Remote) sendPhoto(ctx context.Context, who, chat string, a Action) error {
	att := Attachment{GUID: r.store.newGUID(), Name: "photo.png", MIME: "image/png", UTI: "public.png", Data: a.Photo}
	if a.Arriving > 0 {
		att.TransferState = 3 // downloading
	}
	if _, err := r.store.Insert(ctx, Msg{Chat: chat, Sender: who, Attachments: []Attachment{att}}); err != nil {
		return err
	}
	if a.Arriving <= 0 {
		return nil
	}
	if err := pause(ctx, a.Arriving); err != nil {
		return err
	}
	return r.store.FinishTransfer(ctx, att.GUID, a.Photo)
}

// Say writes an incoming message from a remote person, in their one-to-one
// chat with the line (created if needed), as if they had written first.
func (r *Remote) Say(ctx context.Context, from, text string) (Row, error) {
	c, err := r.store.EnsureChat(ctx, ChatSpec{Participants: []string{from}})
	if err != nil {
		return Row{}, err
	}
	return r.store.Insert(ctx, Msg{Chat: c.GUID, Sender: from, Text: text})
}

// pause waits for d or ctx's end.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
