package bridge

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Input limits. A request travels as one JSON line, and a BlueBubbles helper
// parses each socket read on its own, so a huge text risks arriving in two
// reads and being lost; 64 KiB stays well inside one loopback read.
const (
	// MaxTextBytes is command.MaxTextBytes: the command's own bound is
	// the helper's too.
	MaxTextBytes  = command.MaxTextBytes
	maxNameBytes  = 256
	maxEmojiBytes = 64
)

// plan is a validated command: what it needs from the helper and its
// normalised values, the ones sent onward.
type plan struct {
	needs        []linev1.Capability
	chat         string
	group        bool // chat is a group (";+;")
	participants []string
	handle       string // lookup_handle
	effectID     string
	code         int    // react: associated_message_type
	emoji        string // react: emoji tapback
	confirm      bool   // whether the command leaves something in chat.db
}

// validate checks cmd before anything is sent, so a bad input costs nothing
// and its error says how to fix it. The kind is known: the agent's
// dispatcher refuses a command without one before any driver runs.
func validate(cmd *linev1.Command) (*plan, error) {
	p := &plan{needs: helperNeeds(cmd), confirm: true}
	if g := cmd.GetChatGuid(); g != "" {
		c, err := command.ParseChatGUID(g)
		if err != nil {
			return nil, err
		}
		p.chat, p.group = c.String(), c.Group
	}
	if ps := cmd.GetParticipants(); ps != nil {
		hs, err := command.NormalizeHandles(ps.GetHandles())
		if err != nil {
			return nil, err
		}
		p.participants = hs
	}
	name := command.KindName(cmd)
	needChat := func() error {
		if p.chat == "" {
			return invalid("%s needs a chat_guid target", name)
		}
		return nil
	}
	var err error
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		err = p.sendText(k.SendText)
	case *linev1.Command_SendAttachment:
		err = errors.Join(needChat(), p.sendAttachment(k.SendAttachment))
	case *linev1.Command_Typing, *linev1.Command_MarkRead, *linev1.Command_ClearBackground:
		err = needChat()
		_, typing := k.(*linev1.Command_Typing)
		p.confirm = !typing // typing leaves no row
	case *linev1.Command_React:
		err = errors.Join(needChat(), p.react(k.React))
	case *linev1.Command_Edit:
		err = errors.Join(needChat(), target(k.Edit.GetMessageGuid(), k.Edit.GetPart()), validateText("text", k.Edit.GetText()))
	case *linev1.Command_Unsend:
		err = errors.Join(needChat(), target(k.Unsend.GetMessageGuid(), k.Unsend.GetPart()))
	case *linev1.Command_SetBackground:
		err = errors.Join(needChat(), source(k.SetBackground.GetData(), k.SetBackground.GetUrl()), imageType(k.SetBackground.GetMimeType()))
	case *linev1.Command_CreateChat:
		err = p.createChat(k.CreateChat)
	case *linev1.Command_RenameGroup:
		err = errors.Join(needChat(), p.groupChat(), validateName(k.RenameGroup.GetName()))
	case *linev1.Command_LookupHandle:
		p.handle, err = normalizeHandle(k.LookupHandle.GetHandle())
		p.confirm = false
	}
	if err != nil {
		return nil, firstError(err)
	}
	return p, nil
}

// helperNeeds is what the helper must offer for cmd: what command.Needs
// says, except that a text to participants without a chat goes through
// create-chat, and a new group with a name through set-display-name.
func helperNeeds(cmd *linev1.Command) []linev1.Capability {
	needs := command.Needs(cmd)
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		if cmd.GetChatGuid() == "" {
			needs[0] = linev1.Capability_CAPABILITY_CREATE_CHAT
		}
	case *linev1.Command_CreateChat:
		parts := k.CreateChat.GetParticipants()
		if len(parts) == 0 {
			parts = cmd.GetParticipants().GetHandles()
		}
		if k.CreateChat.GetName() != "" && len(parts) > 1 {
			needs = append(needs, linev1.Capability_CAPABILITY_RENAME_GROUP)
		}
	}
	return needs
}

// normalizeHandle is command.NormalizeHandle as an error.
func normalizeHandle(h string) (string, error) {
	n, err := command.NormalizeHandle(h)
	if err != nil {
		return "", err
	}
	return n, nil
}

func (p *plan) sendText(st *linev1.SendText) error {
	if p.chat == "" {
		if len(p.participants) == 0 {
			return invalid("send_text needs a chat_guid or participants target")
		}
		if st.GetReplyTo() != nil {
			return invalid("a reply needs the chat_guid of the message it answers")
		}
	}
	return errors.Join(validateText("text", st.GetText()), p.effect(st.GetEffect()), p.reply(st.GetReplyTo()), subject(st.GetSubject()))
}

func (p *plan) sendAttachment(sa *linev1.SendAttachment) error {
	return errors.Join(source(sa.GetData(), sa.GetUrl()), p.effect(sa.GetEffect()), p.reply(sa.GetReplyTo()))
}

func (p *plan) effect(name string) error {
	if name == "" {
		return nil
	}
	e, err := effects.Lookup(name)
	if err != nil {
		return invalid("%v", err) // lists the valid names
	}
	p.effectID = e.ID
	return nil
}

func (p *plan) reply(r *linev1.ReplyTo) error {
	if r == nil {
		return nil
	}
	return target(r.GetMessageGuid(), r.GetPart())
}

func (p *plan) react(r *linev1.React) error {
	if err := target(r.GetMessageGuid(), r.GetPart()); err != nil {
		return err
	}
	if x, ok := r.GetReaction().(*linev1.React_Emoji); ok {
		if err := validateEmoji(x.Emoji); err != nil {
			return err
		}
		p.emoji = x.Emoji
	}
	code, err := effects.ReactionCode(r.GetTapback(), p.emoji != "", r.GetRemove())
	if err != nil {
		return invalid("%v", err) // lists the valid names
	}
	p.code = code
	return nil
}

func (p *plan) createChat(cc *linev1.CreateChat) error {
	parts := cc.GetParticipants()
	if len(parts) == 0 {
		parts = p.participants
	}
	if len(parts) == 0 {
		return invalid("create_chat needs at least one participant")
	}
	hs, err := command.NormalizeHandles(parts)
	if err != nil {
		return err
	}
	p.participants = hs
	if cc.GetFirstMessage() != "" {
		// Without one the chat is only created, which needs a helper
		// feature: the bridge checks that before sending.
		if err := validateText("first_message", cc.GetFirstMessage()); err != nil {
			return err
		}
	}
	if cc.GetName() != "" && len(parts) > 1 {
		return validateName(cc.GetName())
	}
	return nil
}

// target checks a message GUID and part index a command points at.
func target(guid string, part int32) error {
	switch {
	case strings.TrimSpace(guid) == "":
		return invalid("the target message_guid is missing")
	case strings.ContainsAny(guid, " \t\r\n\x00"):
		return invalid("message_guid %q contains whitespace", guid)
	case part < 0:
		return invalid("part %d is negative", part)
	}
	return nil
}

// groupChat refuses a one-to-one chat where only a group will do.
func (p *plan) groupChat() error {
	if p.chat != "" && !p.group {
		return invalid("chat %q is a one-to-one chat; only groups have names", p.chat)
	}
	return nil
}

func validateText(field, s string) error {
	switch {
	case s == "":
		return invalid("%s is empty", field)
	case !utf8.ValidString(s):
		return invalid("%s is not valid UTF-8", field)
	case strings.IndexByte(s, 0) >= 0:
		return invalid("%s contains a NUL character", field)
	case strings.TrimSpace(s) == "":
		return invalid("%s is only whitespace", field)
	case len(s) > MaxTextBytes:
		return invalid("%s is %d bytes, over the %d-byte limit of one helper request", field, len(s), MaxTextBytes)
	}
	return nil
}

func subject(s string) error {
	if s == "" {
		return nil
	}
	return validateText("subject", s)
}

func validateName(n string) error {
	if err := validateText("name", n); err != nil {
		return err
	}
	if len(n) > maxNameBytes {
		return invalid("name is %d bytes, over %d", len(n), maxNameBytes)
	}
	return nil
}

// validateEmoji rejects what is plainly not one emoji: empty, long, spaces,
// or words (a caller writing "love" as an emoji meant the tapback).
func validateEmoji(e string) error {
	if e == "" || !utf8.ValidString(e) || len(e) > maxEmojiBytes {
		return invalid("emoji %q is not a single emoji", e)
	}
	for _, r := range e {
		if unicode.IsSpace(r) || unicode.IsControl(r) || (r < utf8.RuneSelf && unicode.IsLetter(r)) {
			return invalid("emoji %q is not a single emoji (for a classic tapback use tapback: %s)", e, strings.Join(effects.TapbackNames(), ", "))
		}
	}
	return nil
}

func source(data []byte, url string) error {
	switch {
	case len(data) == 0 && url == "":
		return invalid("the file is missing: give data or an https url")
	case url != "" && !strings.HasPrefix(strings.ToLower(url), "https://"):
		// Never the URL itself: its path or query may carry a signed token.
		return invalid("the url is not https (%s)", urlScheme(url))
	}
	return nil
}

// urlScheme names a URL's scheme for an error, and nothing else of it.
func urlScheme(raw string) string {
	i := strings.IndexByte(raw, ':')
	if i <= 0 || i > 16 {
		return "it has no scheme"
	}
	for j, r := range raw[:i] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || j > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return "it has no scheme"
		}
	}
	return `its scheme is "` + strings.ToLower(raw[:i]) + `"`
}

func imageType(mt string) error {
	if mt != "" && !strings.HasPrefix(mt, "image/") {
		return invalid("mime_type %q is not an image type", mt)
	}
	return nil
}

// firstError unwraps errors.Join to the first *command.Error, so a caller
// gets one typed error naming the first problem.
func firstError(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 0 {
		return firstError(j.Unwrap()[0]) // Join keeps only non-nil errors
	}
	return err
}
