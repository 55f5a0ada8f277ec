package command

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Error is a command failure a caller can act on: the code says what to do
// (fix the input, retry later, route elsewhere), the message says why in words
// an operator understands. Every driver failure is one of these; anything else
// reaching the agent is reported as INTERNAL.
type Error struct {
	Code linev1.ErrorCode
	// Msg is the human explanation. It never contains a secret.
	Msg string
	// Capability names what is missing, for UNSUPPORTED.
	Capability linev1.Capability
	// RetryAfter is set for QUOTA_EXCEEDED.
	RetryAfter time.Duration
	// RetryAt is when a quota slot frees, for QUOTA_EXCEEDED: a result
	// answered again later (a redelivery) still names the right moment.
	RetryAt time.Time
	// LastState is the last state seen before giving up (timeouts,
	// NOT_DISTRIBUTABLE).
	LastState string
	// Err is the underlying cause, kept for errors.Is/As; it is not sent.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(CodeName(e.Code))
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	if e.Err != nil && (e.Msg == "" || !strings.Contains(e.Msg, e.Err.Error())) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a formatted message. A %w verb in format
// becomes the cause as well as part of the message.
func Errorf(code linev1.ErrorCode, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// Unsupported is the error for a command that needs a capability this Mac
// lacks right now; the message says what would provide it.
func Unsupported(c linev1.Capability, why string) *Error {
	return &Error{Code: linev1.ErrorCode_ERROR_CODE_UNSUPPORTED, Capability: c, Msg: fmt.Sprintf("%s is not available: %s", CapabilityName(c), why)}
}

// AsError turns any error into an *Error: typed errors pass through, context
// deadline and cancellation become DEADLINE_EXCEEDED and UNAVAILABLE, and
// anything else INTERNAL, so the relay always gets a code.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED, Msg: "the command's deadline passed", Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, Msg: "the agent is shutting down", Err: err}
	}
	return &Error{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL, Msg: err.Error(), Err: err}
}

// Proto is the wire form of the error.
func (e *Error) Proto() *linev1.CommandError {
	pe := &linev1.CommandError{Code: e.Code, Message: e.Error(), Capability: e.Capability, LastState: e.LastState}
	if e.RetryAfter > 0 {
		pe.RetryAfter = durationpb.New(e.RetryAfter)
	}
	if !e.RetryAt.IsZero() {
		pe.RetryAt = timestamppb.New(e.RetryAt)
	}
	return pe
}

// CodeName is the short spelling of an error code ("INVALID_ARGUMENT"), the
// one operators see in the HTTP API and logs.
func CodeName(c linev1.ErrorCode) string {
	return strings.TrimPrefix(c.String(), "ERROR_CODE_")
}

// CapabilityName is the short spelling of a capability ("send_text").
func CapabilityName(c linev1.Capability) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "CAPABILITY_"))
}
