package bridge

import (
	"context"
	"fmt"
	"strings"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

type chatData struct {
	ChatGUID string `json:"chatGuid"`
}

// Typing shows (on) or hides our typing indicator in a chat.
func (b *Bridge) Typing(ctx context.Context, chatGUID string, on bool) error {
	if err := required("typing", "chat GUID", chatGUID); err != nil {
		return err
	}
	action := ActionStopTyping
	if on {
		action = ActionStartTyping
	}
	_, err := b.do(ctx, action, "", chatData{chatGUID}, nil)
	return err
}

// MarkRead marks every message of a chat read (mark-chat-read), which also
// sends read receipts when the account sends them.
func (b *Bridge) MarkRead(ctx context.Context, chatGUID string) error {
	if err := required("mark-chat-read", "chat GUID", chatGUID); err != nil {
		return err
	}
	_, err := b.do(ctx, ActionMarkChatRead, "", chatData{chatGUID}, nil)
	return err
}

// CreateChatRequest starts a conversation. The BlueBubbles helper creates a
// chat only by sending into it; an empty Message (no first message) needs a
// line-agent helper announcing FeatureCreateChatEmpty. Service defaults to
// "iMessage".
type CreateChatRequest struct {
	Addresses []string
	Message   string
	Service   string
	EffectID  string
	Subject   string
}

type createChatData struct {
	Addresses      []string `json:"addresses"`
	Message        *string  `json:"message"`
	Service        string   `json:"service"`
	AttributedBody any      `json:"attributedBody"`
	EffectID       *string  `json:"effectId"`
	Subject        *string  `json:"subject"`
}

// CreateChat creates (or finds) the chat with these addresses and sends
// the first message (create-chat). Current BlueBubbles helpers answer the
// message's GUID, older ones the chat's, line-agent helpers both (chatGuid).
// Without a Message the chat is only created: that needs the
// FeatureCreateChatEmpty extension (UNSUPPORTED create_chat otherwise,
// before anything is sent), and the answer carries the chat GUID only.
func (b *Bridge) CreateChat(ctx context.Context, r CreateChatRequest) (Sent, error) {
	if len(r.Addresses) == 0 {
		return Sent{}, invalid("create-chat needs at least one address")
	}
	feature := ""
	if r.Message == "" {
		if r.EffectID != "" || r.Subject != "" {
			return Sent{}, invalid("create-chat without a first message cannot carry an effect or a subject")
		}
		feature = FeatureCreateChatEmpty
	} else if err := required("create-chat", "first message", r.Message); err != nil {
		return Sent{}, err
	}
	if r.Service == "" {
		r.Service = "iMessage"
	}
	ans, err := b.do(ctx, ActionCreateChat, feature, createChatData{
		Addresses: r.Addresses, Message: nullable(r.Message), Service: r.Service,
		EffectID: nullable(r.EffectID), Subject: nullable(r.Subject),
	}, nil)
	if err != nil {
		return Sent{}, err
	}
	s := Sent{MessageGUID: ans.identifier, ChatGUID: ans.str("chatGuid")}
	if s.ChatGUID == "" && looksLikeChatGUID(s.MessageGUID) {
		s.ChatGUID, s.MessageGUID = s.MessageGUID, ""
	}
	if feature != "" {
		// Nothing was sent, so there is no message to name.
		if s.ChatGUID == "" {
			return Sent{}, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, LastState: StateSent,
				Msg: "the helper created the chat without a first message but did not say its chat GUID"}
		}
		s.MessageGUID = ""
	}
	return s, nil
}

// looksLikeChatGUID tells "iMessage;-;+1555..." from a message GUID.
func looksLikeChatGUID(s string) bool {
	_, err := command.ParseChatGUID(s)
	return err == nil
}

type displayNameData struct {
	ChatGUID string `json:"chatGuid"`
	NewName  string `json:"newName"`
}

// RenameGroup sets a group chat's name (set-display-name).
func (b *Bridge) RenameGroup(ctx context.Context, chatGUID, name string) error {
	if err := required("set-display-name", "chat GUID", chatGUID, "name", name); err != nil {
		return err
	}
	_, err := b.do(ctx, ActionSetDisplayName, "", displayNameData{chatGUID, name}, nil)
	return err
}

type availabilityData struct {
	AliasType string `json:"aliasType"`
	Address   string `json:"address"`
}

// LookupHandle asks Apple's directory whether handle (phone number or
// email) is reachable on iMessage (check-imessage-availability).
func (b *Bridge) LookupHandle(ctx context.Context, handle string) (bool, error) {
	if err := required("check-imessage-availability", "handle", handle); err != nil {
		return false, err
	}
	alias := "phone"
	if strings.Contains(handle, "@") {
		alias = "email"
	}
	ans, err := b.do(ctx, ActionCheckIMessage, "", availabilityData{alias, handle}, nil)
	if err != nil {
		return false, err
	}
	v, ok := ans.boolean("available")
	if !ok {
		return false, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, Msg: "the helper's availability answer has no \"available\" field"}
	}
	return v, nil
}

type backgroundData struct {
	ChatGUID string  `json:"chatGuid"`
	FilePath string  `json:"filePath"`
	MimeType *string `json:"mimeType"`
}

// SetBackground sets a chat's background image (line-agent extension
// set-chat-background). The helper answers once the iCloud asset is
// uploaded, with its id; progress (may be nil) receives upload stages on
// the bridge's reader goroutine and must return quickly.
func (b *Bridge) SetBackground(ctx context.Context, chatGUID, imagePath, mimeType string, progress func(Progress)) (assetID string, err error) {
	if err := required("set-chat-background", "chat GUID", chatGUID, "image path", imagePath); err != nil {
		return "", err
	}
	ans, err := b.do(ctx, ActionSetBackground, "", backgroundData{chatGUID, imagePath, nullable(mimeType)}, progress)
	if err != nil {
		return "", err
	}
	return ans.str("assetId"), nil
}

// ClearBackground removes a chat's background (clear-chat-background).
func (b *Bridge) ClearBackground(ctx context.Context, chatGUID string) error {
	if err := required("clear-chat-background", "chat GUID", chatGUID); err != nil {
		return err
	}
	_, err := b.do(ctx, ActionClearBackground, "", chatData{chatGUID}, nil)
	return err
}

// required checks name/value pairs for empty values, as the BlueBubbles
// server does before bothering the helper.
func required(action string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if strings.TrimSpace(pairs[i+1]) == "" {
			return invalid("%s needs a %s", action, pairs[i])
		}
	}
	return nil
}

func invalid(format string, args ...any) *command.Error {
	return &command.Error{Code: linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Msg: fmt.Sprintf(format, args...)}
}
