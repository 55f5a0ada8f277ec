package typedstream

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Attribute keys that Messages stores in the attribute dictionaries of an
// attributedBody. They are exported so that callers writing archives (the
// simulated Messages, tests) and callers inspecting Run.Other use the exact
// spelling Messages uses.
const (
	// KeyMessagePart holds the NSNumber index of the message part a run
	// belongs to; edits and unsends in message_summary_info refer to parts
	// by this index.
	KeyMessagePart = "__kIMMessagePartAttributeName"
	// KeyFileTransferGUID holds the attachment GUID (attachment.guid) of the
	// U+FFFC placeholder character the run covers.
	KeyFileTransferGUID = "__kIMFileTransferGUIDAttributeName"
	// KeyMention holds the handle (phone number or e-mail) a mention refers to.
	KeyMention = "__kIMMentionConfirmedMention"
	// KeyLink holds the NSURL of a link Messages detected or the sender typed.
	KeyLink = "__kIMLinkAttributeName"
	// KeyBold marks bold text (macOS 15 and later).
	KeyBold = "__kIMTextBoldAttributeName"
	// KeyItalic marks italic text (macOS 15 and later).
	KeyItalic = "__kIMTextItalicAttributeName"
	// KeyUnderline marks underlined text (macOS 15 and later).
	KeyUnderline = "__kIMTextUnderlineAttributeName"
	// KeyStrikethrough marks struck-through text (macOS 15 and later).
	KeyStrikethrough = "__kIMTextStrikethroughAttributeName"
	// KeyTextEffect holds the NSNumber id of an animated text effect
	// (macOS 15 and later); see [TextEffectName].
	KeyTextEffect = "__kIMTextEffectAttributeName"
	// KeyBaseWritingDirection holds the paragraph writing direction
	// (-1 natural, 0 left-to-right, 1 right-to-left). It is not modelled by
	// a Run field and so appears in Run.Other.
	KeyBaseWritingDirection = "__kIMBaseWritingDirectionAttributeName"
	// KeyDataDetected holds an archived data-detector result (for example
	// for a link or a date). It is not modelled and appears in Run.Other as
	// a short description.
	KeyDataDetected = "__kIMDataDetectedAttributeName"
)

// Bounds on Run.Other. Unknown attributes are kept for diagnosis, not for
// faithful reproduction, so they are capped to keep the decoded value small
// whatever the archive contains.
const (
	// MaxOtherKeys is the most unknown attributes kept per run.
	MaxOtherKeys = 16
	// MaxOtherValueLen is the longest value (in bytes) kept in Run.Other;
	// longer ones are cut at a rune boundary and end in "…".
	MaxOtherValueLen = 256
	// MaxOtherKeyLen is the longest key (in bytes) kept in Run.Other.
	MaxOtherKeyLen = 128
)

// AttributedString is the decoded form of an NSAttributedString archive: the
// message text and the attribute runs that Messages attached to it.
//
// The zero value is an empty string with no runs.
type AttributedString struct {
	// Text is the message text as UTF-8. Attachments appear as U+FFFC
	// (OBJECT REPLACEMENT CHARACTER), one per attachment, with a run whose
	// AttachmentGUID names it. Invalid UTF-8 in an archive is replaced by
	// U+FFFD so that Text is always valid UTF-8.
	Text string `json:"text"`
	// Runs lists the attribute runs in text order. Runs whose attribute
	// dictionary is empty are left out (they carry no information), so runs
	// need not cover the whole text. Decode always returns a non-nil slice
	// so that JSON shows "runs": [] rather than null.
	Runs []Run `json:"runs"`
	// Recovered is set when the archive was damaged and Decode rebuilt the
	// text heuristically: the string's length field claimed more bytes than
	// the archive holds, and the text was taken up to the next end-of-object
	// marker (a pattern seen in real chat.db rows). Runs are then clipped to
	// the recovered text. Encode ignores the field.
	Recovered bool `json:"recovered,omitempty"`
}

// Run is one attribute run of an AttributedString: a range of the text and
// the attributes Messages gave it.
//
// Offsets come in two units. Start and Length are in UTF-16 code units,
// exactly as Apple stores them, so they stay comparable with other Apple data
// (message_summary_info ranges, for instance). ByteStart and ByteLength give
// the same range in bytes of the UTF-8 Text, ready for slicing in Go:
// Text[r.ByteStart : r.ByteStart+r.ByteLength]. When a UTF-16 offset falls
// inside a surrogate pair (which Messages never writes) the byte offset is
// rounded down to the start of that character.
//
// Runs decoded from the same attribute dictionary share their Part pointer
// and Other map: treat them as read-only.
type Run struct {
	// Start is the offset of the run in UTF-16 code units of Text.
	Start int `json:"start"`
	// Length is the length of the run in UTF-16 code units.
	Length int `json:"length"`
	// ByteStart is the offset of the run in bytes of Text. Encode ignores
	// it; see [AttributedString.SetByteOffsets].
	ByteStart int `json:"byte_start"`
	// ByteLength is the length of the run in bytes of Text. Encode ignores it.
	ByteLength int `json:"byte_length"`
	// Part is the message part index (KeyMessagePart), nil when the run has
	// none. A message with attachments and text has one part per bubble.
	Part *int `json:"part,omitempty"`
	// AttachmentGUID is the attachment GUID (KeyFileTransferGUID); the run
	// then covers the attachment's U+FFFC character.
	AttachmentGUID string `json:"attachment_guid,omitempty"`
	// Mention is the handle a mention refers to (KeyMention).
	Mention string `json:"mention,omitempty"`
	// Link is the URL of a link (KeyLink), resolved against its base URL
	// when the archive gives one.
	Link string `json:"link,omitempty"`
	// Bold, Italic, Underline and Strikethrough are the text styles of
	// macOS 15 and later; they are true when the key is present with a
	// non-zero number.
	Bold          bool `json:"bold,omitempty"`
	Italic        bool `json:"italic,omitempty"`
	Underline     bool `json:"underline,omitempty"`
	Strikethrough bool `json:"strikethrough,omitempty"`
	// TextEffect is the id of the animated text effect (KeyTextEffect), 0
	// when there is none; [TextEffectName] names the known ids.
	TextEffect int `json:"text_effect,omitempty"`
	// Other holds the attributes that are not modelled above, and modelled
	// keys whose value had an unexpected type, rendered as text: strings as
	// they are, numbers in decimal, URLs as URLs and anything else as a short
	// "<Class ...>" description. It is bounded by MaxOtherKeys,
	// MaxOtherKeyLen and MaxOtherValueLen. Encode writes these values back as
	// NSString objects, so their original type is not preserved.
	Other map[string]string `json:"other,omitempty"`
}

// hasAttributes reports whether the run carries any attribute at all.
func (r *Run) hasAttributes() bool {
	return r.Part != nil || r.AttachmentGUID != "" || r.Mention != "" || r.Link != "" ||
		r.Bold || r.Italic || r.Underline || r.Strikethrough || r.TextEffect != 0 ||
		len(r.Other) > 0
}

// SetByteOffsets recomputes ByteStart and ByteLength of every run from Start
// and Length. Encode works from the UTF-16 offsets alone, so a value built by
// hand needs this before it can be compared with a decoded one.
func (a *AttributedString) SetByteOffsets() {
	w := utf16Walker{s: a.Text}
	for i := range a.Runs {
		r := &a.Runs[i]
		if r.Start < w.u {
			w = utf16Walker{s: a.Text}
		}
		start := w.advance(r.Start)
		end := w.advance(r.Start + r.Length)
		r.ByteStart, r.ByteLength = start, end-start
	}
}

// textEffects names the text effect ids that Messages on macOS 15 writes.
var textEffects = map[int]string{
	4:  "ripple",
	5:  "big",
	6:  "bloom",
	8:  "nod",
	9:  "shake",
	10: "jitter",
	11: "small",
	12: "explode",
}

// TextEffectName returns a lower-case name for a Run.TextEffect id ("big",
// "shake", ...), "" for 0 and "effect-N" for ids Messages did not use when
// this package was written, so that a CLI can print something readable
// without hiding new ids.
func TextEffectName(id int) string {
	if id == 0 {
		return ""
	}
	if n, ok := textEffects[id]; ok {
		return n
	}
	return "effect-" + strconv.Itoa(id)
}

// ErrNoText reports an archive that decodes but holds no text: it has no
// root NSString or NSAttributedString, or the string is empty (Messages
// writes such archives for some attachment-only and system rows). Callers
// typically fall back to message.text. Test with errors.Is.
var ErrNoText = errors.New("typedstream: no text: the archive holds no NSString")

// ErrMalformed matches every *FormatError through errors.Is, for callers
// that only need to know the archive was damaged, not where.
var ErrMalformed = errors.New("typedstream: malformed archive")

// FormatError reports malformed or unsupported input: a bad header, a
// truncated value, a reference to a table entry that does not exist, a
// length larger than the remaining data, nesting deeper than the decoder
// allows, and so on. Offset is the byte offset in the input where the
// problem was found, for diagnosis of real chat.db rows.
type FormatError struct {
	Offset int
	Reason string
}

// Error implements error.
func (e *FormatError) Error() string {
	return fmt.Sprintf("typedstream: malformed archive at offset %d: %s", e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrMalformed) true for every *FormatError.
func (e *FormatError) Is(target error) bool { return target == ErrMalformed }

// utf16Walker converts increasing UTF-16 offsets of s into byte offsets in
// one forward pass, so that mapping all runs of a string is linear.
type utf16Walker struct {
	s string
	b int // byte offset reached
	u int // UTF-16 offset reached
}

// advance moves to UTF-16 offset target (never backwards) and returns the
// byte offset there, rounding down inside a surrogate pair.
func (w *utf16Walker) advance(target int) int {
	for w.u < target && w.b < len(w.s) {
		r, size := utf8.DecodeRuneInString(w.s[w.b:])
		n := 1
		if r >= 0x10000 {
			n = 2
		}
		if w.u+n > target {
			break
		}
		w.u += n
		w.b += size
	}
	return w.b
}

// utf16Len returns the length of s in UTF-16 code units.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}
