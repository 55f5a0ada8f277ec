package applescript

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Text limits. Messages itself takes very long texts, but everything the
// sender passes to osascript travels in argv, which macOS caps (ARG_MAX, 1 MiB
// for argv and environment together); a caller that sends a novel by mistake
// should hear so instead of a truncated or failed send.
const (
	// DefaultMaxTextRunes is the default limit on a text's length, in Unicode
	// code points (what a person would call characters, near enough).
	DefaultMaxTextRunes = 20_000
	// MaxTextBytes is the hard ceiling on a text's UTF-8 size whatever
	// MaxTextRunes says: a quarter of ARG_MAX, leaving room for the
	// environment and the other arguments.
	MaxTextBytes = 256 << 10
)

// invalid builds the INVALID_ARGUMENT error every validation failure is.
func invalid(format string, args ...any) *command.Error {
	return command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, format, args...)
}

// validateText checks a text before anything runs. NUL is rejected because
// argv is a list of C strings: a NUL would cut the text short silently, so
// the recipient would get something other than what was asked.
func validateText(text string, maxRunes int) error {
	if text == "" {
		return invalid("text is empty")
	}
	if !utf8.ValidString(text) {
		return invalid("text is not valid UTF-8")
	}
	if i := strings.IndexByte(text, 0); i >= 0 {
		return invalid("text contains a NUL character (at byte %d): AppleScript arguments cannot carry it, so the text would arrive cut short", i)
	}
	if strings.TrimSpace(text) == "" {
		return invalid("text is only whitespace")
	}
	if len(text) > MaxTextBytes {
		return invalid("text is %d bytes, over the %d-byte limit of an osascript argument", len(text), MaxTextBytes)
	}
	if n := utf8.RuneCountInString(text); n > maxRunes {
		return invalid("text is %d characters, over the limit of %d", n, maxRunes)
	}
	return nil
}

// extRE is what survives of an extension: short, ASCII letters and digits.
var extRE = regexp.MustCompile(`^[a-z0-9]{1,10}$`)

// sanitizeExt keeps only a caller's extension that is plain, lower case and
// short; everything else about the caller's file name is dropped. It is
// given the name spool.Admit returned, so the extension kept is one Admit
// judged (or none).
func sanitizeExt(fileName string) string {
	base := fileName
	if i := strings.LastIndexAny(base, `/\`); i >= 0 {
		base = base[i+1:]
	}
	ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(base), "."))
	if !extRE.MatchString(ext) {
		return ""
	}
	return ext
}

// sniffExt names the extension for content whose caller gave no usable one,
// so that Messages shows a photo as a photo.
func sniffExt(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte{0xff, 0xd8, 0xff}):
		return "jpg"
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return "png"
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return "gif"
	case len(data) >= 12 && string(data[0:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return "webp"
	case bytes.HasPrefix(data, []byte("%PDF-")):
		return "pdf"
	case len(data) >= 12 && string(data[4:8]) == "ftyp":
		switch string(data[8:12]) {
		case "heic", "heix", "mif1", "msf1":
			return "heic"
		case "qt  ":
			return "mov"
		case "M4A ":
			return "m4a"
		}
		return "mp4"
	case bytes.HasPrefix(data, []byte("ID3")), len(data) > 1 && data[0] == 0xff && data[1]&0xe0 == 0xe0:
		return "mp3"
	}
	return ""
}
