package bridge

import (
	"errors"
	"net/mail"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/effects"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Input limits. A request travels as one JSON line, and a BlueBubbles helper
// parses each socket read on its own, so a huge text risks arriving in two
// reads and being lost; 64 KiB stays well inside one loopback read.
const (
	MaxTextBytes  = 64 << 10
	maxNameBytes  = 256
	maxEmojiBytes = 64
)

var phoneRE = regexp.MustCompile(`^\+?[0-9]{3,15}$`)

// plan is a validated command: what it needs and its normalised values.
type plan struct {
	needs        []linev1.Capability
	chat         string
	participants []string
	effectID     string
	code         int    // react: associated_message_type
	emoji        string // react: emoji tapback
	confirm      bool   // whether the command leaves something in chat.db
}

// validate checks cmd before anything is sent, so a bad input costs nothing
// and its error says how to fix it.
func validate(cmd *linev1.Command) (*plan, error) {
	kind := command.Kind(cmd)
	if kind == linev1.Capability_CAPABILITY_UNSPECIFIED {
		return nil, invalid("the command has no kind")
	}
	p := &plan{needs: []linev1.Capability{kind}, chat: cmd.GetChatGuid(), confirm: true}
	if p.chat != "" {
		if err := validateChatGUID(p.chat); err != nil {
			return nil, err
		}
		p.chat = chatdb.CanonicalChatGUID(p.chat)
	}
	if ps := cmd.GetParticipants(); ps != nil {
		if err := validateHandles(ps.GetHandles()); err != nil {
			return nil, err
		}
		p.participants = canonicalHandles(ps.GetHandles())
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
		err = errors.Join(needChat(), groupChat(p.chat), validateName(k.RenameGroup.GetName()))
	case *linev1.Command_LookupHandle:
		err = validateHandle(k.LookupHandle.GetHandle())
		p.confirm = false
	}
	if err != nil {
		return nil, firstError(err)
	}
	return p, nil
}

func (p *plan) sendText(st *linev1.SendText) error {
	if p.chat == "" {
		if len(p.participants) == 0 {
			return invalid("send_text needs a chat_guid or participants target")
		}
		if st.GetReplyTo() != nil {
			return invalid("a reply needs the chat_guid of the message it answers")
		}
		// A first message to new participants goes through create-chat.
		p.needs = []linev1.Capability{linev1.Capability_CAPABILITY_CREATE_CHAT}
	}
	if st.GetSubject() != "" {
		p.needs = append(p.needs, linev1.Capability_CAPABILITY_SUBJECT)
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
	p.needs = append(p.needs, linev1.Capability_CAPABILITY_EFFECT)
	return nil
}

func (p *plan) reply(r *linev1.ReplyTo) error {
	if r == nil {
		return nil
	}
	p.needs = append(p.needs, linev1.Capability_CAPABILITY_REPLY)
	return target(r.GetMessageGuid(), r.GetPart())
}

func (p *plan) react(r *linev1.React) error {
	if err := target(r.GetMessageGuid(), r.GetPart()); err != nil {
		return err
	}
	switch x := r.GetReaction().(type) {
	case *linev1.React_Tapback:
		t, err := effects.LookupTapback(x.Tapback)
		if err != nil {
			return invalid("%v", err)
		}
		p.code = t.Code
	case *linev1.React_Emoji:
		if err := validateEmoji(x.Emoji); err != nil {
			return err
		}
		p.code, p.emoji = effects.CodeEmoji, x.Emoji
	default:
		return invalid("react needs exactly one of tapback (%s) or emoji", strings.Join(effects.TapbackNames(), ", "))
	}
	if r.GetRemove() {
		p.code += effects.RemoveOffset
	}
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
	p.participants = canonicalHandles(parts)
	err := validateHandles(parts)
	if cc.GetFirstMessage() != "" {
		// Without one the chat is only created, which needs a helper
		// feature: the bridge checks that before sending.
		err = errors.Join(err, validateText("first_message", cc.GetFirstMessage()))
	}
	if cc.GetName() != "" && len(parts) > 1 {
		p.needs = append(p.needs, linev1.Capability_CAPABILITY_RENAME_GROUP)
		err = errors.Join(err, validateName(cc.GetName()))
	}
	return err
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

// validateChatGUID accepts "<service>;-;<handle>" and "<service>;+;<id>".
func validateChatGUID(g string) error {
	f := strings.SplitN(g, ";", 3)
	if len(f) != 3 || f[0] == "" || (f[1] != "-" && f[1] != "+") || f[2] == "" || strings.ContainsAny(g, " \t\r\n\x00") {
		return invalid("chat_guid %q is not a chat GUID (want service;-;handle or service;+;chat id)", g)
	}
	return nil
}

func groupChat(g string) error {
	if strings.Contains(g, ";-;") {
		return invalid("chat %q is a one-to-one chat; only groups have names", g)
	}
	return nil
}

func validateHandles(hs []string) error {
	if len(hs) == 0 {
		return invalid("participants is empty")
	}
	for _, h := range hs {
		if err := validateHandle(h); err != nil {
			return err
		}
	}
	return nil
}

// canonicalHandles returns hs as Messages spells handles
// (chatdb.CanonicalHandle: an email address lower-cased, a phone number as
// given), in a new slice: Messages compares email handles without case, so
// the helper is given the spelling of the chat Messages already has.
func canonicalHandles(hs []string) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = chatdb.CanonicalHandle(h)
	}
	return out
}

// validateHandle accepts an E.164-style phone number or an email address,
// with no reformatting: the helper must see the number the caller wrote (an
// email address is lower-cased afterwards, see canonicalHandles).
func validateHandle(h string) error {
	if h == "" {
		return invalid("handle is empty")
	}
	if strings.Contains(h, "@") {
		if a, err := mail.ParseAddress(h); err == nil && a.Address == h {
			return nil
		}
	} else if phoneRE.MatchString(h) {
		return nil
	}
	return invalid("handle %q is neither a phone number in E.164 (+15551234567) nor an email address", h)
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
