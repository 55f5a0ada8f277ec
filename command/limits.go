package command

import (
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Sizes a command may have. Every string field of a command is bounded
// (MaxStringBytes unless named below), every repeated field is bounded, and
// the two kinds of file data have their documented caps. A value past a
// bound is refused with INVALID_ARGUMENT before it reaches a database, a
// LIKE pattern, a stream frame or Messages.
const (
	// MaxIDBytes bounds the command id (the idempotency key).
	MaxIDBytes = 256
	// MaxHandleBytes bounds a line, a handle and a message or chat GUID's
	// address part.
	MaxHandleBytes = 256
	// MaxChatGUIDBytes bounds a chat GUID ("iMessage;+;chat123...").
	MaxChatGUIDBytes = 512
	// MaxTextBytes bounds a message's text (send_text, edit, a new chat's
	// first message) in UTF-8 bytes.
	MaxTextBytes = 64 << 10
	// MaxURLBytes bounds an attachment or background URL.
	MaxURLBytes = 8 << 10
	// MaxStringBytes bounds every other string field.
	MaxStringBytes = 1 << 10
	// MaxRepeated bounds every repeated field (participants).
	MaxRepeated = 64
	// MaxAttachmentBytes is the largest attachment, as bytes or fetched.
	MaxAttachmentBytes = 100 << 20
	// MaxBackgroundBytes is the largest chat background image.
	MaxBackgroundBytes = 10 << 20
	// MaxDeadlineAhead is how far in the future a deadline may be. Beyond
	// it a deadline is a mistake (or an overflow waiting to happen: a time
	// past 2262 has no int64 nanosecond form).
	MaxDeadlineAhead = 7 * 24 * time.Hour
)

// fieldLimits names the fields whose bound is not MaxStringBytes.
var fieldLimits = map[protoreflect.FullName]int{
	"line.v1.Command.id":               MaxIDBytes,
	"line.v1.Command.line":             MaxHandleBytes,
	"line.v1.Command.chat_guid":        MaxChatGUIDBytes,
	"line.v1.Participants.handles":     MaxHandleBytes,
	"line.v1.CreateChat.participants":  MaxHandleBytes,
	"line.v1.LookupHandle.handle":      MaxHandleBytes,
	"line.v1.SendText.text":            MaxTextBytes,
	"line.v1.Edit.text":                MaxTextBytes,
	"line.v1.CreateChat.first_message": MaxTextBytes,
	"line.v1.SendAttachment.url":       MaxURLBytes,
	"line.v1.SetBackground.url":        MaxURLBytes,
	"line.v1.SendAttachment.data":      MaxAttachmentBytes,
	"line.v1.SetBackground.data":       MaxBackgroundBytes,
	"line.v1.ReplyTo.message_guid":     MaxChatGUIDBytes,
	"line.v1.React.message_guid":       MaxChatGUIDBytes,
	"line.v1.Edit.message_guid":        MaxChatGUIDBytes,
	"line.v1.Unsend.message_guid":      MaxChatGUIDBytes,
	"line.v1.GetMessage.message_guid":  MaxChatGUIDBytes,
	"line.v1.BlobRef.id":               MaxIDBytes,
}

// CheckBounds refuses a command any of whose fields is too large, whose
// text is not UTF-8, or whose deadline is invalid or more than
// MaxDeadlineAhead after now. It says which field, never repeating the
// value.
func CheckBounds(cmd *linev1.Command, now time.Time) *Error {
	if cmd == nil {
		return invalid("a command is required")
	}
	if err := checkMessage(cmd.ProtoReflect()); err != nil {
		return err
	}
	if d := cmd.GetDeadline(); d != nil {
		if err := d.CheckValid(); err != nil {
			return invalid("deadline is not a valid time")
		}
		if d.AsTime().After(now.Add(MaxDeadlineAhead)) {
			return invalid("deadline is more than %s ahead; give a nearer one", MaxDeadlineAhead)
		}
	}
	return nil
}

func checkMessage(m protoreflect.Message) *Error {
	var bad *Error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		bad = checkField(fd, v)
		return bad == nil
	})
	return bad
}

func checkField(fd protoreflect.FieldDescriptor, v protoreflect.Value) *Error {
	name := string(fd.Name())
	if fd.IsList() {
		l := v.List()
		if l.Len() > MaxRepeated {
			return invalid("%s has %d entries; at most %d are accepted", name, l.Len(), MaxRepeated)
		}
		for i := range l.Len() {
			if err := checkScalar(fd, l.Get(i)); err != nil {
				return err
			}
		}
		return nil
	}
	if fd.IsMap() {
		return invalid("%s: maps are not accepted", name)
	}
	return checkScalar(fd, v)
}

func checkScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) *Error {
	name := string(fd.Name())
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := v.String()
		if max := limitOf(fd); len(s) > max {
			return invalid("%s is %d bytes; at most %d are accepted", name, len(s), max)
		}
		if !utf8.ValidString(s) {
			return invalid("%s is not valid UTF-8", name)
		}
	case protoreflect.BytesKind:
		if max := limitOf(fd); len(v.Bytes()) > max {
			return invalid("%s is %d bytes; at most %d are accepted", name, len(v.Bytes()), max)
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName() == "google.protobuf.Timestamp" || fd.Message().FullName() == "google.protobuf.Duration" {
			return nil
		}
		return checkMessage(v.Message())
	}
	return nil
}

// limitOf is a field's bound: its entry in fieldLimits, else
// MaxStringBytes (bytes fields included: only file data may be large).
func limitOf(fd protoreflect.FieldDescriptor) int {
	if n, ok := fieldLimits[fd.FullName()]; ok {
		return n
	}
	return MaxStringBytes
}

func invalid(format string, args ...any) *Error {
	return Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, format, args...)
}

// DefaultTimeout is the deadline a command gets when it is submitted
// without one (the relay's default) and the bound the agent applies to a
// command that arrives without one (from a relay that set none).
const DefaultTimeout = 120 * time.Second

// CutFileName keeps the last max bytes of a file name, starting on a UTF-8
// character: the name loses its beginning, never its extension. Cut inside
// a character, a name is not valid UTF-8; on its way to the helper as JSON
// the broken bytes become U+FFFD and the helper looks for a file that does
// not exist.
func CutFileName(name string, max int) string {
	if len(name) <= max {
		return name
	}
	name = name[len(name)-max:]
	for len(name) > 0 && !utf8.RuneStart(name[0]) {
		name = name[1:]
	}
	return name
}
