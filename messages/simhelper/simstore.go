package simhelper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// SimStoreOptions configure NewSimStore.
type SimStoreOptions struct {
	// Latency is how long "Apple's servers" take to mark an outgoing row
	// sent, and then again to mark it delivered. Default 5 ms.
	Latency time.Duration
	// Unreachable lists handles that check-imessage-availability answers
	// false for; every other well-formed handle is reachable.
	Unreachable []string
	// OnSent is told about every outgoing message once it is delivered
	// (the simulated people: sim.Remote.Deliver). It must not block.
	OnSent func(sim.Delivery)
	// Reader, when set, is used to check that a tapback's target exists
	// (IMCore cannot react to a message it does not have).
	Reader *chatdb.Reader
	// Upload scripts the simulated iCloud upload of each background
	// (Duration, Steps, Stall, Fail, LoseAt); the zero plan finishes at
	// once. SetUploadPlan changes it later.
	Upload sim.UploadPlan
	// Logger; default discard.
	Logger *slog.Logger
}

// SimStore is Messages for the simulated helper on top of the simulated
// Messages' chat.db (a *sim.Store): each action writes the rows Messages
// writes for it. An outgoing message is sent with sim.Store.Send: inserted
// at once (unsent), marked sent and then delivered in place after Latency
// each, as Apple's servers answer, then handed to OnSent; tapbacks, edits,
// unsends, read marks, chat creation and renames are written as Messages
// records them. Typing writes nothing.
// Chat backgrounds run the simulated iCloud upload (sim.Store.StartUpload)
// under SimStoreOptions.Upload (SetUploadPlan changes it).
type SimStore struct {
	st   *sim.Store
	opts SimStoreOptions
	log  *slog.Logger

	mu          sync.Mutex
	unreachable map[string]bool
	closed      bool
	plan        sim.UploadPlan
	uploads     []*sim.Upload
	wg          sync.WaitGroup
	stop        chan struct{}
}

// SimStoreWithhold lists the actions a helper backed by a SimStore must not
// announce, because SimStore does not perform them: none any more (chat
// backgrounds are simulated). Kept for callers that still pass it.
var SimStoreWithhold []string

var _ Messages = (*SimStore)(nil)

// NewSimStore returns the adapter; Close stops its pending deliveries.
func NewSimStore(st *sim.Store, opts SimStoreOptions) *SimStore {
	if opts.Latency <= 0 {
		opts.Latency = 5 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &SimStore{st: st, opts: opts, log: opts.Logger, unreachable: map[string]bool{}, stop: make(chan struct{}), plan: opts.Upload}
	for _, h := range opts.Unreachable {
		s.unreachable[command.NormalizeLine(h)] = true
	}
	return s
}

// SetUnreachable makes Available answer false for address (an email
// address in any case).
func (s *SimStore) SetUnreachable(address string) {
	s.mu.Lock()
	s.unreachable[command.NormalizeLine(address)] = true
	s.mu.Unlock()
}

// Close stops marking rows sent and delivered and stops the background
// uploads still running, and waits for the goroutines doing it. Call it
// before closing the Store.
func (s *SimStore) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	uploads := s.uploads
	s.mu.Unlock()
	for _, u := range uploads {
		u.Stop() // a stalled or lost upload runs until stopped
	}
	s.wg.Wait()
}

// chat finds an existing chat, as IMCore finds only those: sim.Store.Chat
// takes the GUID under any service spelling and an email identifier in any
// case, as Messages does.
func (s *SimStore) chat(ctx context.Context, guid string) (sim.Chat, error) {
	c, err := s.st.Chat(ctx, guid)
	return c, mapErr(err)
}

// mapErr turns the Store's not-found errors into the helper's.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sim.ErrNoChat):
		return fmt.Errorf("%w: %v", ErrNoChat, err)
	case errors.Is(err, sim.ErrNoMessage):
		return fmt.Errorf("%w: %v", ErrNoMessage, err)
	}
	return err
}

// send writes an outgoing row with sim.Store.Send, whose Apple's servers
// mark it sent and delivered and hand it to OnSent, until Close.
func (s *SimStore) send(ctx context.Context, chat sim.Chat, m sim.Msg) (Sent, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Sent{}, errors.New("Messages is quitting")
	}
	s.wg.Add(1)
	s.mu.Unlock()
	snd, err := s.st.Send(ctx, chat, m, sim.Outgoing{Latency: s.opts.Latency, Deliver: s.opts.OnSent, Stop: s.stop})
	if err != nil {
		s.wg.Done()
		return Sent{}, mapErr(err)
	}
	go func() {
		defer s.wg.Done()
		if err := snd.Err(); err != nil && !errors.Is(err, sim.ErrSendStopped) {
			s.log.Warn("simstore: the servers did not finish a send", "guid", snd.Row().GUID, "err", err)
		}
	}()
	return Sent{MessageGUID: snd.Row().GUID, ChatGUID: chat.GUID}, nil
}

// SendText implements Messages.
func (s *SimStore) SendText(ctx context.Context, r SendText) (Sent, error) {
	chat, err := s.chat(ctx, r.ChatGUID)
	if err != nil {
		return Sent{}, err
	}
	return s.send(ctx, chat, sim.Msg{Text: r.Text, Subject: r.Subject, Effect: r.EffectID, ReplyTo: r.ReplyTo, ReplyToPart: r.ReplyPart})
}

// SendAttachment implements Messages: the file is copied into Messages'
// storage (the simulated attachments folder; its name, type and size
// become the attachment row) before the answer, as the real helper does.
func (s *SimStore) SendAttachment(ctx context.Context, r SendAttachment) (Sent, error) {
	chat, err := s.chat(ctx, r.ChatGUID)
	if err != nil {
		return Sent{}, err
	}
	data, err := os.ReadFile(r.Path)
	if err != nil {
		return Sent{}, fmt.Errorf("File does not exist: %s", filepath.Base(r.Path))
	}
	name := filepath.Base(r.Path)
	mt := mime.TypeByExtension(filepath.Ext(name))
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	if mt == "" {
		mt = "application/octet-stream"
	}
	return s.send(ctx, chat, sim.Msg{Subject: r.Subject, Effect: r.EffectID, ReplyTo: r.ReplyTo, ReplyToPart: r.ReplyPart,
		Attachments: []sim.Attachment{{Name: name, MIME: mt, Data: data}}})
}

// SetTyping implements Messages: typing leaves nothing in chat.db.
func (s *SimStore) SetTyping(ctx context.Context, chatGUID string, _ bool) error {
	_, err := s.chat(ctx, chatGUID)
	return err
}

// React implements Messages: a tapback row from this account.
func (s *SimStore) React(ctx context.Context, r Reaction) (Sent, error) {
	chat, err := s.chat(ctx, r.ChatGUID)
	if err != nil {
		return Sent{}, err
	}
	code := r.Code
	if code == 0 {
		// A plain BlueBubbles request names the tapback ("love", "-love").
		name, remove := strings.CutPrefix(r.Type, "-")
		tapback, emoji := name, name == "emoji"
		if emoji {
			tapback = ""
		}
		if code, err = effects.ReactionCode(tapback, emoji, remove); err != nil {
			return Sent{}, fmt.Errorf("Invalid reaction type: %s", r.Type)
		}
	}
	emoji := ""
	if name, _, _ := effects.Associated(code); name == "emoji" {
		emoji = r.Emoji
	}
	// IMCore finds the target first; a missing one fails.
	if s.opts.Reader != nil {
		if _, err := s.opts.Reader.LookupMessage(ctx, r.TargetGUID); errors.Is(err, chatdb.ErrNotFound) {
			return Sent{}, fmt.Errorf("%w: %s", ErrNoMessage, r.TargetGUID)
		} else if err != nil {
			return Sent{}, err
		}
	}
	row, err := s.st.Insert(ctx, sim.Msg{Chat: chat.GUID, FromMe: true, Sent: true,
		Tapback: &sim.Tapback{Target: r.TargetGUID, Part: r.Part, Code: code, Emoji: emoji}})
	if err != nil {
		return Sent{}, mapErr(err)
	}
	return Sent{MessageGUID: row.GUID, ChatGUID: chat.GUID}, nil
}

// Edit implements Messages.
func (s *SimStore) Edit(ctx context.Context, r Edit) error {
	if _, err := s.chat(ctx, r.ChatGUID); err != nil {
		return err
	}
	return mapErr(s.st.Edit(ctx, r.MessageGUID, r.Part, r.Text))
}

// Unsend implements Messages.
func (s *SimStore) Unsend(ctx context.Context, r Unsend) error {
	if _, err := s.chat(ctx, r.ChatGUID); err != nil {
		return err
	}
	return mapErr(s.st.Unsend(ctx, r.MessageGUID, r.Part))
}

// MarkRead implements Messages.
func (s *SimStore) MarkRead(ctx context.Context, chatGUID string) error {
	chat, err := s.chat(ctx, chatGUID)
	if err != nil {
		return err
	}
	_, err = s.st.MarkChatRead(ctx, chat.GUID)
	return mapErr(err)
}

// CreateChat implements Messages: the chat is found or created with its
// participants, then the first message, if any, is sent into it (without
// one only the chat row is written: create-chat-empty).
func (s *SimStore) CreateChat(ctx context.Context, r CreateChat) (Sent, error) {
	if len(r.Addresses) == 0 {
		return Sent{}, errors.New("Provide addresses!")
	}
	svc := r.Service
	if svc == "" {
		svc = "iMessage"
	}
	chat, err := s.st.EnsureChat(ctx, sim.ChatSpec{Service: svc, Participants: r.Addresses, Group: len(r.Addresses) > 1})
	if err != nil {
		return Sent{}, mapErr(err)
	}
	if r.Message == "" {
		return Sent{ChatGUID: chat.GUID}, nil
	}
	return s.send(ctx, chat, sim.Msg{Text: r.Message, Subject: r.Subject, Effect: r.EffectID})
}

// RenameGroup implements Messages.
func (s *SimStore) RenameGroup(ctx context.Context, chatGUID, name string) error {
	chat, err := s.chat(ctx, chatGUID)
	if err != nil {
		return err
	}
	if !chat.IsGroup() {
		return errors.New("Chat is not a group chat")
	}
	_, err = s.st.RenameGroup(ctx, chat.GUID, "", name)
	return mapErr(err)
}

// Available implements Messages: any handle the one rule accepts
// (command.CheckHandle) is reachable unless it is listed as unreachable
// (in any spelling: email addresses compared without case).
func (s *SimStore) Available(_ context.Context, address, _ string) (bool, error) {
	wellFormed := command.CheckHandle(address) == nil
	s.mu.Lock()
	defer s.mu.Unlock()
	return wellFormed && !s.unreachable[command.NormalizeLine(address)], nil
}

// SetBackground implements Messages with the simulated iCloud upload
// (sim.Store.StartUpload) under the current UploadPlan: progress goes to
// progress as the upload reports it, and the asset id is answered once the
// evidence is written. The upload runs on its own, as inside Messages: the
// request's context ending (the agent went away) does not stop it; Close
// does.
func (s *SimStore) SetBackground(ctx context.Context, r Background, progress func(Progress)) (string, error) {
	chat, err := s.chat(ctx, r.ChatGUID)
	if err != nil {
		return "", err
	}
	if svc := strings.ToUpper(chat.Service); svc == "SMS" || svc == "RCS" {
		return "", fmt.Errorf("Chat %s is not an iMessage chat", r.ChatGUID)
	}
	image, err := os.ReadFile(r.Path)
	if err != nil {
		return "", fmt.Errorf("cannot read the background image: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", errors.New("Messages is quitting")
	}
	plan := s.plan
	s.mu.Unlock()
	u, err := s.st.StartUpload(chat.GUID, image, plan, func(done, total int64) {
		stage := "uploading"
		if done == 0 {
			stage = "staged"
		}
		progress(Progress{Stage: stage, Done: uint64(done), Total: uint64(total)})
	})
	if err != nil {
		return "", mapErr(err)
	}
	s.mu.Lock()
	s.uploads = append(s.uploads, u)
	s.mu.Unlock()
	select {
	case <-u.Done():
		if err := u.Err(); err != nil {
			var ue *sim.UploadError
			if errors.As(err, &ue) {
				return "", fmt.Errorf("background upload failed: %s", ue.Reason)
			}
			return "", err
		}
		return u.AssetID(), nil
	case <-ctx.Done():
		return "", ctx.Err()
	case <-s.stop:
		return "", errors.New("Messages is quitting")
	}
}

// SetUploadPlan replaces the plan of the uploads started from now on.
func (s *SimStore) SetUploadPlan(p sim.UploadPlan) {
	s.mu.Lock()
	s.plan = p
	s.mu.Unlock()
}

// Uploads is how many background uploads were started.
func (s *SimStore) Uploads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.uploads)
}

// ClearBackground implements Messages: the properties lose the background
// and a removal row (item_type 3, group_action_type 6) is written. A chat
// without a background is left alone.
func (s *SimStore) ClearBackground(ctx context.Context, chatGUID string) error {
	chat, err := s.chat(ctx, chatGUID)
	if err != nil {
		return err
	}
	if s.opts.Reader != nil {
		if bg, err := s.opts.Reader.ChatBackground(ctx, chat.GUID); err == nil && !bg.Set {
			return nil
		}
	}
	_, err = s.st.ClearBackground(ctx, chat.GUID, "")
	return mapErr(err)
}
