package simhelper

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/line-agent/line-agent/command"
)

// Memory is a trivial in-memory Messages for tests: chats must exist
// (AddChat), as IMCore only finds existing chats, and every call is logged.
type Memory struct {
	mu          sync.Mutex
	seq         int
	chats       map[string]*MemChat    // guarded by mu
	msgs        map[string]*MemMessage // guarded by mu
	calls       []string               // guarded by mu
	unreachable map[string]bool        // guarded by mu
}

// MemChat is a chat as Memory holds it.
type MemChat struct {
	GUID         string
	Name         string
	Participants []string
	Typing       bool
	Read         bool
	Background   string // asset id; "" for none
}

// MemMessage is a sent message or tapback.
type MemMessage struct {
	GUID, ChatGUID, Text, EffectID, Subject, ReplyTo string
	ReplyPart                                        int
	Path                                             string // attachment
	Reaction                                         string // reactionType for tapbacks
	Emoji                                            string
	Target                                           string // tapback target
	Edited                                           []string
	Unsent                                           []int
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{chats: map[string]*MemChat{}, msgs: map[string]*MemMessage{}, unreachable: map[string]bool{}}
}

var _ Messages = (*Memory)(nil)

// AddChat creates a chat; a GUID with ";+;" is a group.
func (m *Memory) AddChat(guid string, participants ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.chats[guid] = &MemChat{GUID: guid, Participants: participants}
}

// SetUnreachable makes Available answer false for address.
func (m *Memory) SetUnreachable(address string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unreachable[address] = true
}

// Chat returns a copy of a chat, or false.
func (m *Memory) Chat(guid string) (MemChat, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.chats[guid]
	if !ok {
		return MemChat{}, false
	}
	cp := *c
	cp.Participants = slices.Clone(c.Participants)
	return cp, true
}

// Message returns a copy of a message, or false.
func (m *Memory) Message(guid string) (MemMessage, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	x, ok := m.msgs[guid]
	if !ok {
		return MemMessage{}, false
	}
	cp := *x
	cp.Edited, cp.Unsent = slices.Clone(x.Edited), slices.Clone(x.Unsent)
	return cp, true
}

// Calls lists the calls made so far, as "method chat".
func (m *Memory) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// chatLocked logs the call and finds the chat. m.mu must be held.
func (m *Memory) chatLocked(method, guid string) (*MemChat, error) {
	m.calls = append(m.calls, method+" "+guid)
	c, ok := m.chats[guid]
	if !ok {
		return nil, fmt.Errorf("%s: %w", guid, ErrNoChat)
	}
	return c, nil
}

func (m *Memory) newMessageLocked(x MemMessage) Sent {
	m.seq++
	x.GUID = fmt.Sprintf("SIM-%08d-0000-4000-8000-000000000000", m.seq)
	m.msgs[x.GUID] = &x
	return Sent{MessageGUID: x.GUID, ChatGUID: x.ChatGUID}
}

// SendText implements Messages.
func (m *Memory) SendText(_ context.Context, r SendText) (Sent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.chatLocked("SendText", r.ChatGUID); err != nil {
		return Sent{}, err
	}
	if r.ReplyTo != "" && m.msgs[r.ReplyTo] == nil {
		return Sent{}, fmt.Errorf("%s: %w", r.ReplyTo, ErrNoMessage)
	}
	return m.newMessageLocked(MemMessage{ChatGUID: r.ChatGUID, Text: r.Text, EffectID: r.EffectID, Subject: r.Subject, ReplyTo: r.ReplyTo, ReplyPart: r.ReplyPart}), nil
}

// SendAttachment implements Messages.
func (m *Memory) SendAttachment(_ context.Context, r SendAttachment) (Sent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.chatLocked("SendAttachment", r.ChatGUID); err != nil {
		return Sent{}, err
	}
	return m.newMessageLocked(MemMessage{ChatGUID: r.ChatGUID, Path: r.Path, Text: "\ufffc", EffectID: r.EffectID}), nil
}

// SetTyping implements Messages.
func (m *Memory) SetTyping(_ context.Context, chatGUID string, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.chatLocked("SetTyping", chatGUID)
	if err == nil {
		c.Typing = on
	}
	return err
}

// React implements Messages.
func (m *Memory) React(_ context.Context, r Reaction) (Sent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.chatLocked("React", r.ChatGUID); err != nil {
		return Sent{}, err
	}
	if m.msgs[r.TargetGUID] == nil {
		return Sent{}, fmt.Errorf("%s: %w", r.TargetGUID, ErrNoMessage)
	}
	return m.newMessageLocked(MemMessage{ChatGUID: r.ChatGUID, Reaction: r.Type, Emoji: r.Emoji, Target: r.TargetGUID}), nil
}

func (m *Memory) ownMessageLocked(method, chat, guid string) (*MemMessage, error) {
	if _, err := m.chatLocked(method, chat); err != nil {
		return nil, err
	}
	x := m.msgs[guid]
	if x == nil || x.ChatGUID != chat {
		return nil, fmt.Errorf("%s: %w", guid, ErrNoMessage)
	}
	return x, nil
}

// Edit implements Messages.
func (m *Memory) Edit(_ context.Context, r Edit) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	x, err := m.ownMessageLocked("Edit", r.ChatGUID, r.MessageGUID)
	if err == nil {
		x.Edited = append(x.Edited, x.Text)
		x.Text = r.Text
	}
	return err
}

// Unsend implements Messages.
func (m *Memory) Unsend(_ context.Context, r Unsend) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	x, err := m.ownMessageLocked("Unsend", r.ChatGUID, r.MessageGUID)
	if err == nil {
		x.Unsent = append(x.Unsent, r.Part)
	}
	return err
}

// MarkRead implements Messages.
func (m *Memory) MarkRead(_ context.Context, chatGUID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.chatLocked("MarkRead", chatGUID)
	if err == nil {
		c.Read = true
	}
	return err
}

// CreateChat implements Messages: one address makes "<service>;-;<addr>",
// several a new group "<service>;+;chat<n>"; without a Message no message
// is made.
func (m *Memory) CreateChat(_ context.Context, r CreateChat) (Sent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	service := r.Service
	if service == "" {
		service = "iMessage"
	}
	g := command.ChatGUID{Service: service}
	if len(r.Addresses) == 1 {
		g.ID = r.Addresses[0]
	} else {
		m.seq++
		g.Group, g.ID = true, fmt.Sprintf("chat%d", m.seq)
	}
	guid := g.String()
	m.calls = append(m.calls, "CreateChat "+strings.Join(r.Addresses, ","))
	if m.chats[guid] == nil {
		m.chats[guid] = &MemChat{GUID: guid, Participants: slices.Clone(r.Addresses)}
	}
	if r.Message == "" {
		return Sent{ChatGUID: guid}, nil // create-chat-empty: nothing sent
	}
	return m.newMessageLocked(MemMessage{ChatGUID: guid, Text: r.Message, EffectID: r.EffectID, Subject: r.Subject}), nil
}

// RenameGroup implements Messages.
func (m *Memory) RenameGroup(_ context.Context, chatGUID, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.chatLocked("RenameGroup", chatGUID)
	if err == nil {
		c.Name = name
	}
	return err
}

// Available implements Messages: everything is reachable unless
// SetUnreachable said otherwise.
func (m *Memory) Available(_ context.Context, address, _ string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "Available "+address)
	return !m.unreachable[address], nil
}

// SetBackground implements Messages, reporting two upload stages.
func (m *Memory) SetBackground(_ context.Context, r Background, progress func(Progress)) (string, error) {
	m.mu.Lock()
	c, err := m.chatLocked("SetBackground", r.ChatGUID)
	if err != nil {
		m.mu.Unlock()
		return "", err
	}
	m.seq++
	asset := fmt.Sprintf("ASSET-%d", m.seq)
	m.mu.Unlock()
	progress(Progress{Stage: "uploading", Done: 1, Total: 2})
	progress(Progress{Stage: "distributable", Done: 2, Total: 2})
	m.mu.Lock()
	c.Background = asset
	m.mu.Unlock()
	return asset, nil
}

// ClearBackground implements Messages.
func (m *Memory) ClearBackground(_ context.Context, chatGUID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.chatLocked("ClearBackground", chatGUID)
	if err == nil {
		c.Background = ""
	}
	return err
}
