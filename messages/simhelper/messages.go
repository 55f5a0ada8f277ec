package simhelper

import (
	"context"
	"errors"
)

// Messages is what the simulated helper drives: the simulated Messages app
// (messages/sim, through an adapter) or the in-memory Memory. Each method is
// one helper action; an error becomes the action's error answer.
type Messages interface {
	SendText(ctx context.Context, r SendText) (Sent, error)
	SendAttachment(ctx context.Context, r SendAttachment) (Sent, error)
	SetTyping(ctx context.Context, chatGUID string, on bool) error
	React(ctx context.Context, r Reaction) (Sent, error)
	Edit(ctx context.Context, r Edit) error
	Unsend(ctx context.Context, r Unsend) error
	MarkRead(ctx context.Context, chatGUID string) error
	// CreateChat finds or creates the chat and sends the first message;
	// with an empty Message it only creates the chat (create-chat-empty)
	// and returns its GUID with no message GUID.
	CreateChat(ctx context.Context, r CreateChat) (Sent, error)
	RenameGroup(ctx context.Context, chatGUID, name string) error
	// Available reports whether address is reachable on service.
	Available(ctx context.Context, address, service string) (bool, error)
	// SetBackground uploads the image and returns its asset id once it is
	// distributable, reporting stages through progress.
	SetBackground(ctx context.Context, r Background, progress func(Progress)) (assetID string, err error)
	ClearBackground(ctx context.Context, chatGUID string) error
}

// Errors a Messages returns for a missing chat or message. The helper
// answers them with the texts the BlueBubbles helper uses, which the bridge
// maps to NOT_FOUND; wrap them (fmt.Errorf("...: %w", ErrNoChat)).
var (
	ErrNoChat    = errors.New("chat does not exist")
	ErrNoMessage = errors.New("message not found")
)

// Sent identifies a message the simulated Messages sent.
type Sent struct {
	MessageGUID string
	ChatGUID    string
}

// SendText is a send-message request.
type SendText struct {
	ChatGUID, Text, Subject, EffectID string
	// ReplyTo and ReplyPart name the message part this one replies to.
	ReplyTo   string
	ReplyPart int
}

// SendAttachment is a send-attachment request.
type SendAttachment struct {
	ChatGUID, Path, Subject, EffectID string
	ReplyTo                           string
	ReplyPart                         int
	Audio                             bool
}

// Reaction is a send-reaction request. Type is the wire reactionType
// ("love", "-love", "emoji", "-emoji"); Code is associatedMessageType when
// the bridge sent it.
type Reaction struct {
	ChatGUID, TargetGUID string
	Part                 int
	Type                 string
	Code                 int
	Emoji                string
}

// Edit is an edit-message request.
type Edit struct {
	ChatGUID, MessageGUID string
	Part                  int
	Text, CompatText      string
}

// Unsend is an unsend-message request.
type Unsend struct {
	ChatGUID, MessageGUID string
	Part                  int
}

// CreateChat is a create-chat request.
type CreateChat struct {
	Addresses                           []string
	Message, Service, EffectID, Subject string
}

// Background is a set-chat-background request.
type Background struct {
	ChatGUID, Path, MimeType string
}

// Progress is one stage of a background upload.
type Progress struct {
	Stage       string
	Done, Total uint64
}
