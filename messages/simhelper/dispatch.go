package simhelper

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"time"
)

// The actions of the BlueBubbles helper and the line-agent extensions, as
// docs/bridge.md names them.
var (
	baseActions = []string{
		"send-message", "send-attachment", "send-reaction", "start-typing", "stop-typing",
		"mark-chat-read", "edit-message", "unsend-message", "create-chat",
		"set-display-name", "check-imessage-availability",
	}
	extensionActions = []string{"set-chat-background", "clear-chat-background"}
	// extensionFeatures are the line-agent features this helper announces
	// in line-agent-hello (unless withheld).
	extensionFeatures = []string{"line-framing", "emoji-tapback", "create-chat-empty"}
)

// payload is the union of the request fields the actions use.
type payload struct {
	ChatGUID      string   `json:"chatGuid"`
	Message       *string  `json:"message"`
	Subject       *string  `json:"subject"`
	EffectID      *string  `json:"effectId"`
	Selected      *string  `json:"selectedMessageGuid"`
	PartIndex     int      `json:"partIndex"`
	FilePath      string   `json:"filePath"`
	IsAudio       int      `json:"isAudioMessage"`
	ReactionType  string   `json:"reactionType"`
	AssocType     int      `json:"associatedMessageType"`
	Emoji         *string  `json:"emoji"`
	MessageGUID   string   `json:"messageGuid"`
	Edited        string   `json:"editedMessage"`
	Compat        string   `json:"backwardsCompatibilityMessage"`
	Addresses     []string `json:"addresses"`
	Service       string   `json:"service"`
	NewName       *string  `json:"newName"`
	AliasType     string   `json:"aliasType"`
	Address       string   `json:"address"`
	MimeType      *string  `json:"mimeType"`
	Protocol      int      `json:"protocol"`
	TransactionID string   `json:"-"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// announced is what this helper says it supports.
func (h *Helper) announced() []string {
	var out []string
	for _, a := range append(slices.Clone(baseActions), extensionActions...) {
		if !slices.Contains(h.opts.Withhold, a) {
			out = append(out, a)
		}
	}
	return out
}

// features is what this helper announces besides actions: nothing for a
// plain BlueBubbles helper.
func (h *Helper) features() []string {
	if h.opts.Base {
		return nil
	}
	var out []string
	for _, f := range extensionFeatures {
		if f == "line-framing" && h.opts.ChunkReads {
			continue // it reads one message per read, not by lines
		}
		if !slices.Contains(h.opts.WithholdFeatures, f) {
			out = append(out, f)
		}
	}
	return out
}

// has reports whether the helper announces feature f.
func (h *Helper) has(f string) bool { return slices.Contains(h.features(), f) }

// answers reports whether the helper reacts to action at all.
func (h *Helper) answers(action string) bool {
	if action == "line-agent-hello" {
		return !h.opts.Base
	}
	if h.opts.Base && slices.Contains(extensionActions, action) {
		return false
	}
	return slices.Contains(h.announced(), action) && !slices.Contains(h.opts.Silent, action)
}

// handle answers one request; a request without transactionId gets no
// answer, as with the real helper. With drop it acts, then closes the
// connection instead of answering (DropAfterActingEvery).
func (h *Helper) handle(ctx context.Context, nc net.Conn, action string, raw json.RawMessage, tx *string, drop bool) {
	if !h.answers(action) {
		h.log.Info("not implemented (no answer)", "action", action)
		return
	}
	if h.opts.Delay > 0 {
		t := time.NewTimer(h.opts.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
	reply := func(extra map[string]any) {
		if drop {
			h.log.Info("acted; dropping the connection before answering, as configured", "action", action)
			_ = nc.Close()
			return
		}
		if tx == nil {
			return
		}
		msg := map[string]any{"transactionId": *tx}
		for k, v := range extra {
			msg[k] = v
		}
		_ = h.write(nc, msg)
	}
	if text, ok := h.opts.Fail[action]; ok {
		reply(map[string]any{"error": text})
		return
	}
	var p payload
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &p); err != nil {
			reply(map[string]any{"error": "Malformed data: " + err.Error()})
			return
		}
	}
	if tx != nil {
		p.TransactionID = *tx
	}
	extra, err := h.act(ctx, nc, action, p)
	if err != nil {
		reply(map[string]any{"error": errorText(err)})
		return
	}
	reply(extra)
}

// The error texts below copy the BlueBubbles helper's wording (capitals and
// "!" included) because the bridge reads them.

// errorText is the helper's wording for an error, as the BlueBubbles helper
// words the common ones.
func errorText(err error) string {
	switch {
	case errors.Is(err, ErrNoChat):
		return "Chat does not exist!"
	case errors.Is(err, ErrNoMessage):
		return "Message not found!"
	}
	return err.Error()
}

var errNoChatGUID = errors.New("Provide a chat GUID!")

// act runs one action on Messages and returns the answer's fields.
func (h *Helper) act(ctx context.Context, nc net.Conn, action string, p payload) (map[string]any, error) {
	m := h.opts.Messages
	needChat := action != "create-chat" && action != "check-imessage-availability" && action != "line-agent-hello"
	if needChat && p.ChatGUID == "" {
		return nil, errNoChatGUID
	}
	sent := func(s Sent, err error) (map[string]any, error) {
		if err != nil {
			return nil, err
		}
		out := map[string]any{}
		if s.MessageGUID != "" || action != "create-chat" {
			out["identifier"] = s.MessageGUID
		}
		if action == "create-chat" && !h.opts.Base {
			out["chatGuid"] = s.ChatGUID
		}
		return out, nil
	}
	switch action {
	case "line-agent-hello":
		return map[string]any{"protocol": 1, "helper": "simhelper", "actions": h.announced(),
			"features": h.features()}, nil
	case "send-message":
		return sent(m.SendText(ctx, SendText{ChatGUID: p.ChatGUID, Text: str(p.Message), Subject: str(p.Subject),
			EffectID: str(p.EffectID), ReplyTo: str(p.Selected), ReplyPart: p.PartIndex}))
	case "send-attachment":
		return sent(m.SendAttachment(ctx, SendAttachment{ChatGUID: p.ChatGUID, Path: p.FilePath, Subject: str(p.Subject),
			EffectID: str(p.EffectID), ReplyTo: str(p.Selected), ReplyPart: p.PartIndex, Audio: p.IsAudio == 1}))
	case "send-reaction":
		if !h.has("emoji-tapback") && (p.ReactionType == "emoji" || p.ReactionType == "-emoji") {
			return nil, errors.New("Unknown reaction type")
		}
		if str(p.Selected) == "" || p.ReactionType == "" {
			return nil, errors.New("Provide a message GUID and a reaction type!")
		}
		return sent(m.React(ctx, Reaction{ChatGUID: p.ChatGUID, TargetGUID: str(p.Selected), Part: p.PartIndex,
			Type: p.ReactionType, Code: p.AssocType, Emoji: str(p.Emoji)}))
	case "start-typing", "stop-typing":
		return nil, m.SetTyping(ctx, p.ChatGUID, action == "start-typing")
	case "mark-chat-read":
		return nil, m.MarkRead(ctx, p.ChatGUID)
	case "edit-message":
		return nil, m.Edit(ctx, Edit{ChatGUID: p.ChatGUID, MessageGUID: p.MessageGUID, Part: p.PartIndex, Text: p.Edited, CompatText: p.Compat})
	case "unsend-message":
		return nil, m.Unsend(ctx, Unsend{ChatGUID: p.ChatGUID, MessageGUID: p.MessageGUID, Part: p.PartIndex})
	case "create-chat":
		if len(p.Addresses) == 0 {
			return nil, errors.New("Provide addresses!")
		}
		if str(p.Message) == "" && !h.has("create-chat-empty") {
			// A helper without the extension creates a chat only by
			// sending its first message.
			return nil, errors.New("Provide a message!")
		}
		return sent(m.CreateChat(ctx, CreateChat{Addresses: p.Addresses, Message: str(p.Message), Service: p.Service,
			EffectID: str(p.EffectID), Subject: str(p.Subject)}))
	case "set-display-name":
		if p.NewName == nil {
			return nil, errors.New("Provide a new name for the chat!")
		}
		return nil, m.RenameGroup(ctx, p.ChatGUID, *p.NewName)
	case "check-imessage-availability":
		ok, err := m.Available(ctx, p.Address, "iMessage")
		return map[string]any{"available": ok}, err
	case "set-chat-background":
		asset, err := m.SetBackground(ctx, Background{ChatGUID: p.ChatGUID, Path: p.FilePath, MimeType: str(p.MimeType)}, func(pr Progress) {
			_ = h.write(nc, map[string]any{"event": "background-transfer-progress", "guid": p.ChatGUID,
				"data": map[string]any{"transactionRef": p.TransactionID, "stage": pr.Stage, "done": pr.Done, "total": pr.Total}})
		})
		return map[string]any{"assetId": asset}, err
	case "clear-chat-background":
		return nil, m.ClearBackground(ctx, p.ChatGUID)
	}
	return nil, errors.New("not implemented")
}
