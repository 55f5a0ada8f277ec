// Package effects holds the catalogs that translate between what the relay's
// callers say ("slam", "love") and what Messages stores and IMCore expects
// (Apple's effect identifiers, chat.db associated_message_type codes). They are
// the one place these tables live, so the sender and the chat.db reader can
// never disagree.
package effects

import (
	"fmt"
	"sort"
	"strings"
)

// Kind tells a bubble effect (animates the sent bubble) from a screen effect
// (fills the recipient's screen).
type Kind int

const (
	// Bubble effects animate the message bubble.
	Bubble Kind = iota + 1
	// Screen effects play full-screen on the recipient's device.
	Screen
)

func (k Kind) String() string {
	switch k {
	case Bubble:
		return "bubble"
	case Screen:
		return "screen"
	}
	return "unknown"
}

// Effect is one expressive send style: the name callers use and the Apple
// identifier Messages writes to message.expressive_send_style_id.
type Effect struct {
	Name string
	ID   string
	Kind Kind
}

const (
	bubblePrefix = "com.apple.MobileSMS.expressivesend."
	screenPrefix = "com.apple.messages.effect."
)

// The provider documentation's names (imessage.effect.message.*) and Apple's
// identifiers. "celebration" is Apple's HappyBirthday effect.
var catalog = []Effect{
	{"slam", bubblePrefix + "impact", Bubble},
	{"loud", bubblePrefix + "loud", Bubble},
	{"gentle", bubblePrefix + "gentle", Bubble},
	{"invisible", bubblePrefix + "invisibleink", Bubble},
	{"confetti", screenPrefix + "CKConfettiEffect", Screen},
	{"fireworks", screenPrefix + "CKFireworksEffect", Screen},
	{"balloons", screenPrefix + "CKBalloonEffect", Screen},
	{"heart", screenPrefix + "CKHeartEffect", Screen},
	{"lasers", screenPrefix + "CKLasersEffect", Screen},
	{"celebration", screenPrefix + "CKHappyBirthdayEffect", Screen},
	{"sparkles", screenPrefix + "CKSparklesEffect", Screen},
	{"spotlight", screenPrefix + "CKSpotlightEffect", Screen},
	{"echo", screenPrefix + "CKEchoEffect", Screen},
}

// aliases accepts the other spellings people use for the same effects, so a
// caller's "invisibleink" or "balloon" is not rejected for a plural.
var aliases = map[string]string{
	"impact":        "slam",
	"invisibleink":  "invisible",
	"invisible_ink": "invisible",
	"balloon":       "balloons",
	"happybirthday": "celebration",
}

// All returns every effect, bubble effects first.
func All() []Effect { return append([]Effect(nil), catalog...) }

// Names returns the valid effect names, for error messages and help.
func Names() []string {
	out := make([]string, len(catalog))
	for i, e := range catalog {
		out[i] = e.Name
	}
	return out
}

// UnknownError reports a name that is not in a catalog, with the valid ones,
// so the caller can fix the request without reading documentation.
type UnknownError struct {
	What  string // "effect" or "tapback"
	Name  string
	Valid []string
}

func (e *UnknownError) Error() string {
	return fmt.Sprintf("unknown %s %q; valid: %s", e.What, e.Name, strings.Join(e.Valid, ", "))
}

// Lookup finds an effect by name (case-insensitive, with common aliases) or by
// its Apple identifier.
func Lookup(s string) (Effect, error) {
	if e, ok := ByID(s); ok {
		return e, nil
	}
	n := strings.ToLower(strings.TrimSpace(s))
	if a, ok := aliases[n]; ok {
		n = a
	}
	for _, e := range catalog {
		if e.Name == n {
			return e, nil
		}
	}
	return Effect{}, &UnknownError{What: "effect", Name: s, Valid: Names()}
}

// ByID finds an effect by the identifier chat.db stores.
func ByID(id string) (Effect, bool) {
	for _, e := range catalog {
		if e.ID == id {
			return e, true
		}
	}
	return Effect{}, false
}

// Tapback is one of Apple's six classic reactions and its chat.db code.
type Tapback struct {
	Name string
	Code int
}

// associated_message_type codes (chat.db). A removal is the add code + 1000.
const (
	// StickerPlaced is a sticker dropped onto a bubble.
	StickerPlaced = 1000
	// CodeEmoji is an emoji tapback; the emoji is in associated_message_emoji.
	CodeEmoji = 2006
	// CodeSticker is a sticker tapback.
	CodeSticker = 2007
	// RemoveOffset turns an add code into its removal code.
	RemoveOffset = 1000
)

var tapbacks = []Tapback{
	{"love", 2000}, {"like", 2001}, {"dislike", 2002},
	{"laugh", 2003}, {"emphasize", 2004}, {"question", 2005},
}

// TapbackNames returns the valid tapback names.
func TapbackNames() []string {
	out := make([]string, len(tapbacks))
	for i, t := range tapbacks {
		out[i] = t.Name
	}
	return out
}

var tapbackAliases = map[string]string{
	"heart": "love", "thumbsup": "like", "thumbs_up": "like", "thumbsdown": "dislike",
	"thumbs_down": "dislike", "haha": "laugh", "emphasis": "emphasize", "exclaim": "emphasize",
	"!!": "emphasize", "?": "question",
}

// LookupTapback finds a classic tapback by name (case-insensitive).
func LookupTapback(name string) (Tapback, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if a, ok := tapbackAliases[n]; ok {
		n = a
	}
	for _, t := range tapbacks {
		if t.Name == n {
			return t, nil
		}
	}
	return Tapback{}, &UnknownError{What: "tapback", Name: name, Valid: TapbackNames()}
}

// ReactionCode is the chat.db associated_message_type of a reaction, the
// code Messages writes and the helper is given: a classic tapback by name
// (LookupTapback: love 2000 ... question 2005) or, with emoji, an emoji
// tapback (CodeEmoji, the emoji itself rides beside the code), plus
// RemoveOffset to take it away. Exactly one of tapback and emoji must be
// given; an unknown name lists the valid ones.
func ReactionCode(tapback string, emoji bool, remove bool) (int, error) {
	var code int
	switch {
	case emoji && tapback != "":
		return 0, fmt.Errorf("give either a tapback (%s) or an emoji, not both", strings.Join(TapbackNames(), ", "))
	case emoji:
		code = CodeEmoji
	case tapback == "":
		return 0, fmt.Errorf("a reaction needs exactly one of tapback (%s) or emoji", strings.Join(TapbackNames(), ", "))
	default:
		t, err := LookupTapback(tapback)
		if err != nil {
			return 0, err
		}
		code = t.Code
	}
	if remove {
		code += RemoveOffset
	}
	return code, nil
}

// Associated decodes a chat.db associated_message_type: the tapback's name
// ("love".."question", "emoji", "sticker", or "sticker_placed"), whether the
// row removes it, and false for 0 and codes Messages does not use for reactions.
func Associated(code int) (name string, removed bool, ok bool) {
	switch {
	case code == StickerPlaced:
		return "sticker_placed", false, true
	case code >= 3000 && code <= 3007:
		removed = true
		code -= RemoveOffset
	}
	switch {
	case code >= 2000 && code <= 2005:
		return tapbacks[code-2000].Name, removed, true
	case code == CodeEmoji:
		return "emoji", removed, true
	case code == CodeSticker:
		return "sticker", removed, true
	}
	return "", false, false
}

// AssociatedGUIDError reports an associated_message_guid that is neither
// "p:<part>/<guid>" nor "bp:<guid>".
type AssociatedGUIDError struct{ Value string }

func (e *AssociatedGUIDError) Error() string {
	return fmt.Sprintf("malformed associated message guid %q: want p:<part>/<guid> or bp:<guid>", e.Value)
}

// ParseAssociatedGUID splits the target of a tapback row into the message GUID
// and the part index ("bp:" targets the whole bubble: part 0).
func ParseAssociatedGUID(s string) (guid string, part int, err error) {
	switch {
	case strings.HasPrefix(s, "bp:"):
		if g := s[3:]; g != "" {
			return g, 0, nil
		}
	case strings.HasPrefix(s, "p:"):
		rest := s[2:]
		i := strings.IndexByte(rest, '/')
		if i <= 0 || i == len(rest)-1 {
			break
		}
		p := 0
		for _, c := range rest[:i] {
			if c < '0' || c > '9' || p > 1<<20 {
				return "", 0, &AssociatedGUIDError{s}
			}
			p = p*10 + int(c-'0')
		}
		return rest[i+1:], p, nil
	}
	return "", 0, &AssociatedGUIDError{s}
}

// FormatAssociatedGUID is the inverse of ParseAssociatedGUID, as IMCore and
// chat.db spell a tapback's target.
func FormatAssociatedGUID(guid string, part int) string {
	return fmt.Sprintf("p:%d/%s", part, guid)
}

func init() {
	// The catalog is small and hand-written: keep names unique.
	seen := map[string]bool{}
	for _, e := range catalog {
		if seen[e.Name] || seen[e.ID] {
			panic("effects: duplicate " + e.Name)
		}
		seen[e.Name], seen[e.ID] = true, true
	}
	sort.SliceStable(tapbacks, func(i, j int) bool { return tapbacks[i].Code < tapbacks[j].Code })
}
