package relay

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// How a failed platform API write is answered. The SDK (spectrum-ts with
// @photon-ai/advanced-imessage) turns the gRPC status into its error class
// and reads three trailers: error-code (its vocabulary, below), x-retryable
// ("true" lets its retry middleware try again, with a new idempotency key,
// so it is "true" only where nothing took effect and the cause may pass)
// and error-context-<key>. This file is the one table from a situation to
// that answer; docs/platform-api.md ("Errors") shows the same table, and
// TestErrorTableIsDocumented keeps the two equal.

// The SDK's error-code vocabulary, the part line-relay uses.
const (
	sdkInvalidArgument       = "invalidArgument"
	sdkPreconditionFailed    = "preconditionFailed"
	sdkOperationNotSupported = "operationNotSupported"
	sdkPrivateAPIUnavailable = "privateApiUnavailable"
	sdkChatNotFound          = "chatNotFound"
	sdkMessageNotFound       = "messageNotFound"
	sdkDailyLimitExceeded    = "dailyLimitExceeded"
	sdkServiceUnavailable    = "serviceUnavailable"
	sdkTimeout               = "timeout"
	sdkInternalError         = "internalError"
	sdkAttachmentNotFound    = "attachmentNotFound"
)

// The trailers the SDK reads.
const (
	trailerErrorCode = "error-code"
	trailerRetryable = "x-retryable"
	trailerContext   = "error-context-"
)

// retryRule says when x-retryable is "true".
type retryRule int

const (
	retryNever retryRule = iota
	// retryAlways: nothing took effect and the cause may pass (a Mac that
	// is reconnecting, a busy agent).
	retryAlways
	// retryIfQueued: the command's deadline passed while it was still
	// queued at the relay, so no agent ever saw it.
	retryIfQueued
	// retryIfNotSentToHelper: the private-API helper was away before the
	// request reached it (the bridge's last state not_sent_to_helper).
	retryIfNotSentToHelper
)

// helperNotSentState is the last state the bridge reports when a request
// never reached the helper (messages/bridge.StateNotSent; a test keeps
// them equal).
const helperNotSentState = "not_sent_to_helper"

func (r retryRule) retryable(lastState string) bool {
	switch r {
	case retryAlways:
		return true
	case retryIfQueued:
		return lastState == stateQueued
	case retryIfNotSentToHelper:
		return lastState == helperNotSentState
	}
	return false
}

// String is the rule as the docs table spells it.
func (r retryRule) String() string {
	switch r {
	case retryAlways:
		return "true"
	case retryIfQueued:
		return "true if last_state is queued"
	case retryIfNotSentToHelper:
		return "true if last_state is " + helperNotSentState
	}
	return "false"
}

// errorClass is one row of the table: a situation and its answer.
type errorClass struct {
	// when is the situation as docs/platform-api.md names it.
	when   string
	status codes.Code
	sdk    string
	retry  retryRule
	// context are the error-context keys this class adds (beyond the
	// call's own: chat_guid, message_guid, command_id).
	context []string
}

// The command error codes, as the agent (or the relay's sweeper) reports
// them in a command's final result.
var commandClasses = map[linev1.ErrorCode]errorClass{
	linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT:   {when: "INVALID_ARGUMENT", status: codes.InvalidArgument, sdk: sdkInvalidArgument},
	linev1.ErrorCode_ERROR_CODE_UNSUPPORTED:        {when: "UNSUPPORTED", status: codes.FailedPrecondition, sdk: sdkOperationNotSupported, context: []string{"capability"}},
	linev1.ErrorCode_ERROR_CODE_NOT_FOUND:          {when: "NOT_FOUND (the chat)", status: codes.NotFound, sdk: sdkChatNotFound},
	linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED:     {when: "QUOTA_EXCEEDED", status: codes.ResourceExhausted, sdk: sdkDailyLimitExceeded, context: []string{"retry_after_seconds"}},
	linev1.ErrorCode_ERROR_CODE_MISROUTED:          {when: "MISROUTED", status: codes.Unavailable, sdk: sdkServiceUnavailable},
	linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE: {when: "HELPER_UNAVAILABLE", status: codes.Unavailable, sdk: sdkPrivateAPIUnavailable, retry: retryIfNotSentToHelper, context: []string{"last_state"}},
	linev1.ErrorCode_ERROR_CODE_NOT_DISTRIBUTABLE:  {when: "NOT_DISTRIBUTABLE", status: codes.DeadlineExceeded, sdk: sdkTimeout, context: []string{"last_state"}},
	linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED:  {when: "DEADLINE_EXCEEDED", status: codes.DeadlineExceeded, sdk: sdkTimeout, retry: retryIfQueued, context: []string{"last_state"}},
	linev1.ErrorCode_ERROR_CODE_IN_DOUBT:           {when: "IN_DOUBT", status: codes.Unknown, sdk: sdkInternalError, context: []string{"last_state"}},
	linev1.ErrorCode_ERROR_CODE_UNAVAILABLE:        {when: "UNAVAILABLE", status: codes.Unavailable, sdk: sdkServiceUnavailable, retry: retryAlways},
	linev1.ErrorCode_ERROR_CODE_INTERNAL:           {when: "INTERNAL (or no code)", status: codes.Internal, sdk: sdkInternalError},
	// Reconciled after an agent restart: certainly not in Messages, so the
	// SDK's retry (a new idempotency key) cannot send twice.
	linev1.ErrorCode_ERROR_CODE_NOT_SENT: {when: "NOT_SENT", status: codes.Unavailable, sdk: sdkServiceUnavailable, retry: retryAlways, context: []string{"last_state"}},
}

// commandClassOrder is the order the docs table lists command codes in.
var commandClassOrder = []linev1.ErrorCode{
	linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT,
	linev1.ErrorCode_ERROR_CODE_UNSUPPORTED,
	linev1.ErrorCode_ERROR_CODE_NOT_FOUND,
	linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED,
	linev1.ErrorCode_ERROR_CODE_MISROUTED,
	linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE,
	linev1.ErrorCode_ERROR_CODE_NOT_DISTRIBUTABLE,
	linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED,
	linev1.ErrorCode_ERROR_CODE_IN_DOUBT,
	linev1.ErrorCode_ERROR_CODE_NOT_SENT,
	linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
	linev1.ErrorCode_ERROR_CODE_INTERNAL,
}

// The relay's own situations: a call refused before, or answered without,
// a final result.
var (
	classMessageNotFound = errorClass{when: "NOT_FOUND (the target message)", status: codes.NotFound, sdk: sdkMessageNotFound}
	classBadRequest      = errorClass{when: "the request is malformed (chat GUID, handle, effect, reaction, a field over its bound)", status: codes.InvalidArgument, sdk: sdkInvalidArgument, context: []string{"field"}}
	classNotServed       = errorClass{when: "a field or method line-relay does not serve", status: codes.Unimplemented, sdk: sdkOperationNotSupported}
	classNoAgent         = errorClass{when: "no Mac serves the line (or no line of the pool)", status: codes.Unavailable, sdk: sdkServiceUnavailable, retry: retryAlways}
	classKeyReused       = errorClass{when: "the idempotency key was used for a different request", status: codes.FailedPrecondition, sdk: sdkPreconditionFailed, context: []string{"idempotency_key"}}
	classWaitBound       = errorClass{when: "no final result by the relay's own bound, or by the caller's deadline", status: codes.DeadlineExceeded, sdk: sdkTimeout, context: []string{"last_state"}}
	classShutdown        = errorClass{when: "the relay shut down while the call waited (the command goes on)", status: codes.Unavailable, sdk: sdkServiceUnavailable, context: []string{"last_state"}}
	classTokenCheck      = errorClass{when: "the relay could not check the call's token (its database failed); nothing was done", status: codes.Unavailable, sdk: sdkServiceUnavailable, retry: retryAlways}
	classRelayFault      = errorClass{when: "the relay could not read or write its database, or the agent's success lacks what the response needs", status: codes.Internal, sdk: sdkInternalError}
	classStoreDown       = errorClass{when: "the relay could not reach its database (PostgreSQL down, restarting or cut off); retried with the same idempotency key, a command stored before the failure is not stored twice", status: codes.Unavailable, sdk: sdkServiceUnavailable}
)

// storeFault is the answer to a failed read or write of the relay's
// store: UNAVAILABLE, to be retried with the same idempotency key, when
// the store could not be reached (storeUnreachable), else INTERNAL. Never
// x-retryable: a commit cut off may have stored the command, and a read
// that failed after the submit leaves one stored and running, so the
// SDK's retry, a new key, would be a second command.
func storeFault(err error, msg string) *apiError {
	if storeUnreachable(err) {
		return newAPIError(classStoreDown, "%s: its database cannot be reached; retry", msg)
	}
	return newAPIError(classRelayFault, "%s", msg)
}

// classAttachmentNotFound: an upload that expired or is another token's,
// or an inbound attachment the agent does not have (api_attachments.go).
var classAttachmentNotFound = errorClass{when: "NOT_FOUND (the attachment: no such inbound attachment, or an upload expired or made with another token)", status: codes.NotFound, sdk: sdkAttachmentNotFound}

// errorTable is every class in the order the docs list them.
func errorTable() []errorClass {
	out := make([]errorClass, 0, len(commandClassOrder)+8)
	for _, c := range commandClassOrder {
		out = append(out, commandClasses[c])
		if c == linev1.ErrorCode_ERROR_CODE_NOT_FOUND {
			out = append(out, classMessageNotFound, classAttachmentNotFound)
		}
	}
	return append(out, classBadRequest, classNotServed, classNoAgent, classKeyReused, classWaitBound, classShutdown, classStoreDown, classTokenCheck, classRelayFault)
}

// docRow is the class as one row of the docs table.
func (c errorClass) docRow() string {
	ctx := "-"
	if len(c.context) > 0 {
		ctx = strings.Join(c.context, ", ")
	}
	return fmt.Sprintf("| %s | %s | `%s` | %s | %s |", c.when, codeName(c.status), c.sdk, c.retry, ctx)
}

// codeName is a gRPC code in the proto spelling ("DEADLINE_EXCEEDED" for
// grpc-go's "DeadlineExceeded").
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// apiError is one failed call: its class, the message and the context.
type apiError struct {
	class     errorClass
	msg       string
	lastState string
	ctx       [][2]string // error-context-<key>: value, in order
}

func (e *apiError) Error() string { return e.msg }

// with adds an error-context entry; an empty value is left out.
func (e *apiError) with(key, value string) *apiError {
	if value != "" {
		e.ctx = append(e.ctx, [2]string{key, value})
	}
	return e
}

// newAPIError builds an error of class c; format's values are the
// relay's own words or checked input.
func newAPIError(c errorClass, format string, args ...any) *apiError {
	return &apiError{class: c, msg: platformText(fmt.Sprintf(format, args...))}
}

// badRequest is classBadRequest naming the field.
func badRequest(field, msg string) *apiError {
	return newAPIError(classBadRequest, "%s", msg).with("field", field)
}

// send sets the trailers on the call and returns its status.
func (e *apiError) send(ctx context.Context) error {
	md := metadata.Pairs(trailerErrorCode, e.class.sdk, trailerRetryable, fmt.Sprint(e.class.retry.retryable(e.lastState)))
	if e.lastState != "" && !e.has("last_state") {
		e.with("last_state", e.lastState)
	}
	for _, kv := range e.ctx {
		if v := trailerValue(kv[1]); v != "" {
			md.Append(trailerContext+kv[0], v)
		}
	}
	_ = grpc.SetTrailer(ctx, md)
	return status.Error(e.class.status, e.msg)
}

func (e *apiError) has(key string) bool {
	for _, kv := range e.ctx {
		if kv[0] == key {
			return true
		}
	}
	return false
}

// commandFailure is the answer for a command that ended failed: its stored
// CommandError through the table. targetsMessage tells a missing message
// from a missing chat for NOT_FOUND.
func commandFailure(r *commandRow, targetsMessage bool) *apiError {
	ce := &linev1.CommandError{}
	_ = proto.Unmarshal(r.errProto, ce)
	code := ce.GetCode()
	if code == linev1.ErrorCode_ERROR_CODE_UNSPECIFIED {
		code = linev1.ErrorCode_ERROR_CODE_INTERNAL
	}
	c, ok := commandClasses[code]
	if !ok {
		c = commandClasses[linev1.ErrorCode_ERROR_CODE_INTERNAL]
	}
	msg := ce.GetMessage()
	if msg == "" {
		msg = r.errMessage
	}
	// The agent's message starts with its code ("NOT_FOUND: ..."); the
	// status code says that already.
	msg = strings.TrimPrefix(msg, command.CodeName(code)+": ")
	if code == linev1.ErrorCode_ERROR_CODE_NOT_FOUND && targetsMessage && !strings.HasPrefix(msg, "no chat ") {
		c = classMessageNotFound
	}
	e := &apiError{class: c, msg: platformText(msg), lastState: ce.GetLastState()}
	if ce.GetCapability() != linev1.Capability_CAPABILITY_UNSPECIFIED {
		e.with("capability", command.CapabilityName(ce.GetCapability()))
	}
	if secs, ok := retryAfter(ce, time.Now()); ok {
		e.with("retry_after_seconds", fmt.Sprint(secs))
	}
	return e
}

// chatGUIDText finds chat GUIDs inside free text (an agent's message).
var chatGUIDText = regexp.MustCompile(`(?i)\b(?:iMessage|SMS|RCS|any);([-+]);`)

// platformText respells every chat GUID in s as the SDK accepts it
// (any;-; or any;+;): an agent's message may quote chat.db's spelling,
// which must never reach an SDK application.
func platformText(s string) string {
	return chatGUIDText.ReplaceAllString(s, "any;$1;")
}

// trailerValue is v if it can ride in a gRPC header value (printable
// ASCII), else v with the other bytes percent-encoded.
func trailerValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
