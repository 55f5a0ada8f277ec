package bridge

import (
	"context"
	"strings"

	"github.com/line-agent/line-agent/effects"
)

// Sent is what the helper tells about a message it sent: the new row's
// GUID, and the chat's when the helper says so (create-chat).
type Sent struct {
	MessageGUID string
	ChatGUID    string
}

// SendTextRequest is one text message. EffectID is Apple's identifier
// (effects.Lookup gives it); ReplyTo, with ReplyPart, makes an inline reply.
type SendTextRequest struct {
	ChatGUID  string
	Text      string
	EffectID  string
	ReplyTo   string
	ReplyPart int
	Subject   string
}

type sendMessageData struct {
	ChatGUID            string  `json:"chatGuid"`
	Subject             *string `json:"subject"`
	Message             string  `json:"message"`
	AttributedBody      any     `json:"attributedBody"`
	TextFormatting      any     `json:"textFormatting"`
	EffectID            *string `json:"effectId"`
	SelectedMessageGUID *string `json:"selectedMessageGuid"`
	PartIndex           int     `json:"partIndex"`
}

// SendText sends a text through IMCore (send-message); the answer carries
// the new message's GUID.
func (b *Bridge) SendText(ctx context.Context, r SendTextRequest) (Sent, error) {
	if err := required("send-message", "chat GUID", r.ChatGUID, "text", r.Text); err != nil {
		return Sent{}, err
	}
	ans, err := b.do(ctx, ActionSendMessage, "", sendMessageData{
		ChatGUID: r.ChatGUID, Subject: nullable(r.Subject), Message: r.Text,
		EffectID: nullable(r.EffectID), SelectedMessageGUID: nullable(r.ReplyTo), PartIndex: r.ReplyPart,
	}, nil)
	if err != nil {
		return Sent{}, err
	}
	return Sent{MessageGUID: ans.identifier, ChatGUID: r.ChatGUID}, nil
}

// SendAttachmentRequest is one file. Path must be readable by Messages
// (it is sandboxed); the helper copies the file into Messages' own storage
// before answering, so the caller may delete it afterwards.
type SendAttachmentRequest struct {
	ChatGUID  string
	Path      string
	EffectID  string
	ReplyTo   string
	ReplyPart int
	Subject   string
	// Audio sends the file as an audio message.
	Audio bool
}

type sendAttachmentData struct {
	ChatGUID            string  `json:"chatGuid"`
	FilePath            string  `json:"filePath"`
	IsAudioMessage      int     `json:"isAudioMessage"`
	AttributedBody      any     `json:"attributedBody"`
	Subject             *string `json:"subject"`
	EffectID            *string `json:"effectId"`
	SelectedMessageGUID *string `json:"selectedMessageGuid"`
	PartIndex           int     `json:"partIndex"`
}

// SendAttachment sends a file (send-attachment).
func (b *Bridge) SendAttachment(ctx context.Context, r SendAttachmentRequest) (Sent, error) {
	if err := required("send-attachment", "chat GUID", r.ChatGUID, "file path", r.Path); err != nil {
		return Sent{}, err
	}
	audio := 0
	if r.Audio {
		audio = 1
	}
	ans, err := b.do(ctx, ActionSendAttachment, "", sendAttachmentData{
		ChatGUID: r.ChatGUID, FilePath: r.Path, IsAudioMessage: audio, Subject: nullable(r.Subject),
		EffectID: nullable(r.EffectID), SelectedMessageGUID: nullable(r.ReplyTo), PartIndex: r.ReplyPart,
	}, nil)
	if err != nil {
		return Sent{}, err
	}
	return Sent{MessageGUID: ans.identifier, ChatGUID: r.ChatGUID}, nil
}

// ReactRequest sets or removes a tapback. Code is the chat.db
// associated_message_type: 2000..2005 classic tapbacks, 3000..3005 their
// removal, 2006/3006 an emoji tapback (Emoji set; line-agent helpers only).
type ReactRequest struct {
	ChatGUID   string
	TargetGUID string
	Part       int
	Code       int
	Emoji      string
}

type reactionData struct {
	ChatGUID              string  `json:"chatGuid"`
	SelectedMessageGUID   string  `json:"selectedMessageGuid"`
	ReactionType          string  `json:"reactionType"`
	PartIndex             int     `json:"partIndex"`
	AssociatedMessageType int     `json:"associatedMessageType"`
	Emoji                 *string `json:"emoji,omitempty"`
}

// React sends a tapback (send-reaction). The BlueBubbles helper takes the
// tapback by name ("love", "-love" to remove); the numeric code and emoji
// ride along for line-agent helpers.
func (b *Bridge) React(ctx context.Context, r ReactRequest) (Sent, error) {
	if err := required("send-reaction", "chat GUID", r.ChatGUID, "target message GUID", r.TargetGUID); err != nil {
		return Sent{}, err
	}
	kind, feature, err := reactionType(r.Code, r.Emoji)
	if err != nil {
		return Sent{}, err
	}
	ans, err := b.do(ctx, ActionSendReaction, feature, reactionData{
		ChatGUID: r.ChatGUID, SelectedMessageGUID: r.TargetGUID, ReactionType: kind,
		PartIndex: r.Part, AssociatedMessageType: r.Code, Emoji: nullable(r.Emoji),
	}, nil)
	if err != nil {
		return Sent{}, err
	}
	return Sent{MessageGUID: ans.identifier, ChatGUID: r.ChatGUID}, nil
}

// reactionType spells a code as the helper's reactionType and names the
// feature it needs ("" for the classic six).
func reactionType(code int, emoji string) (kind, feature string, err error) {
	name, removed, ok := effects.Associated(code)
	switch {
	case !ok || name == "sticker" || name == "sticker_placed":
		return "", "", invalid("associated message type %d is not a tapback the helper can send (2000..2006 to add, 3000..3006 to remove)", code)
	case name == "emoji" && strings.TrimSpace(emoji) == "":
		return "", "", invalid("an emoji tapback (type %d) needs the emoji", code)
	case name != "emoji" && emoji != "":
		return "", "", invalid("give either a classic tapback (type %d) or an emoji, not both", code)
	}
	if name == "emoji" {
		feature = FeatureEmojiTapback
	}
	if removed {
		name = "-" + name
	}
	return name, feature, nil
}

// EditRequest replaces the text of one part of a message we sent (macOS 13+,
// within about 2 minutes of sending).
type EditRequest struct {
	ChatGUID    string
	MessageGUID string
	Part        int
	Text        string
}

type editData struct {
	ChatGUID                      string `json:"chatGuid"`
	MessageGUID                   string `json:"messageGuid"`
	EditedMessage                 string `json:"editedMessage"`
	BackwardsCompatibilityMessage string `json:"backwardsCompatibilityMessage"`
	PartIndex                     int    `json:"partIndex"`
}

// Edit edits a sent message (edit-message). Devices too old for edits get
// the backwards-compatibility text, "Edited to “...”", as Apple words it.
func (b *Bridge) Edit(ctx context.Context, r EditRequest) error {
	if err := required("edit-message", "chat GUID", r.ChatGUID, "message GUID", r.MessageGUID, "text", r.Text); err != nil {
		return err
	}
	_, err := b.do(ctx, ActionEditMessage, "", editData{
		ChatGUID: r.ChatGUID, MessageGUID: r.MessageGUID, EditedMessage: r.Text,
		BackwardsCompatibilityMessage: "Edited to \u201c" + r.Text + "\u201d", PartIndex: r.Part,
	}, nil)
	return err
}

type unsendData struct {
	ChatGUID    string `json:"chatGuid"`
	MessageGUID string `json:"messageGuid"`
	PartIndex   int    `json:"partIndex"`
}

// Unsend retracts one part of a message we sent (unsend-message).
func (b *Bridge) Unsend(ctx context.Context, chatGUID, messageGUID string, part int) error {
	if err := required("unsend-message", "chat GUID", chatGUID, "message GUID", messageGUID); err != nil {
		return err
	}
	_, err := b.do(ctx, ActionUnsendMessage, "", unsendData{chatGUID, messageGUID, part}, nil)
	return err
}
