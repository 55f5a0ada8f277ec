package relay

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/line-agent/line-agent/messages/bridge"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// wantAnswer checks a failed call's status and the trailers the SDK reads.
func wantAnswer(t *testing.T, r callResult, code codes.Code, sdk, retryable string, ctx map[string]string) {
	t.Helper()
	if status.Code(r.err) != code {
		t.Fatalf("status %v, want %s", r.err, code)
	}
	if got := r.trailer.Get(trailerErrorCode); len(got) != 1 || got[0] != sdk {
		t.Errorf("error-code %v, want %s (trailers %s)", got, sdk, trailerText(r.trailer))
	}
	if got := r.trailer.Get(trailerRetryable); len(got) != 1 || got[0] != retryable {
		t.Errorf("x-retryable %v, want %s", got, retryable)
	}
	for k, v := range ctx {
		if got := r.trailer.Get(trailerContext + k); len(got) != 1 || got[0] != v {
			t.Errorf("error-context-%s %v, want %q (trailers %s)", k, got, v, trailerText(r.trailer))
		}
	}
	noChatDBSpelling(t, "the error", status.Convert(r.err).Message(), trailerText(r.trailer))
}

// Each command error code reaches the SDK as the table says: status,
// error-code, x-retryable and error-context-<key>, with the agent's message
// respelled so no chat.db chat GUID leaks.
func TestPlatformCommandErrorClasses(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, tokID, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	for i, tc := range []struct {
		name      string
		reply     bool
		err       *linev1.CommandError
		code      codes.Code
		sdk       string
		retryable string
		ctx       map[string]string
	}{
		{"invalid", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, Message: "INVALID_ARGUMENT: text is empty"},
			codes.InvalidArgument, sdkInvalidArgument, "false", nil},
		{"unsupported", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_UNSUPPORTED, Capability: linev1.Capability_CAPABILITY_EFFECT, Message: "UNSUPPORTED: effect is not available"},
			codes.FailedPrecondition, sdkOperationNotSupported, "false", map[string]string{"capability": "effect"}},
		{"chat not found", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "NOT_FOUND: no chat iMessage;-;" + peer + " on this Mac"},
			codes.NotFound, sdkChatNotFound, "false", map[string]string{"chat_guid": dmGUID}},
		{"chat not found, with a reply", true, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "NOT_FOUND: no chat iMessage;-;" + peer + " on this Mac"},
			codes.NotFound, sdkChatNotFound, "false", nil},
		{"message not found", true, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_FOUND, Message: "NOT_FOUND: no message M0 on this Mac"},
			codes.NotFound, sdkMessageNotFound, "false", map[string]string{"message_guid": "M0", "chat_guid": dmGUID}},
		{"quota", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED, RetryAfter: durationpb.New(89500 * time.Millisecond)},
			codes.ResourceExhausted, sdkDailyLimitExceeded, "false", map[string]string{"retry_after_seconds": "90"}},
		{"misrouted", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_MISROUTED},
			codes.Unavailable, sdkServiceUnavailable, "false", nil},
		{"helper away before the request", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE, LastState: bridge.StateNotSent},
			codes.Unavailable, sdkPrivateAPIUnavailable, "true", map[string]string{"last_state": bridge.StateNotSent}},
		{"helper away after the request", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE, LastState: bridge.StateSent},
			codes.Unavailable, sdkPrivateAPIUnavailable, "false", nil},
		{"not distributable", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_NOT_DISTRIBUTABLE, LastState: "uploading 1/2"},
			codes.DeadlineExceeded, sdkTimeout, "false", map[string]string{"last_state": "uploading 1/2"}},
		{"agent deadline", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED, LastState: "written, not sent"},
			codes.DeadlineExceeded, sdkTimeout, "false", map[string]string{"last_state": "written, not sent"}},
		{"in doubt", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_IN_DOUBT, Message: "IN_DOUBT: the agent stopped while it ran"},
			codes.Unknown, sdkInternalError, "false", nil},
		{"unavailable", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, Message: "UNAVAILABLE: agent busy"},
			codes.Unavailable, sdkServiceUnavailable, "true", nil},
		{"internal", false, &linev1.CommandError{Code: linev1.ErrorCode_ERROR_CODE_INTERNAL},
			codes.Internal, sdkInternalError, "false", nil},
		{"no code", false, &linev1.CommandError{Message: "??"},
			codes.Internal, sdkInternalError, "false", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "e" + string(rune('a'+i))
			req := &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}
			if tc.reply {
				req.ReplyTo = &imessagev1.ReplyTarget{MessageGuid: "M0"}
			}
			ch := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
				return c.msgs.SendTextMessage(c.ctx(key), req, o...)
			})
			a.apiFail(a.nextCommand().GetId(), tc.err)
			want := map[string]string{"command_id": "api:" + tokID + ":key:" + key, "chat_guid": dmGUID}
			for k, v := range tc.ctx {
				want[k] = v
			}
			r := awaitCall(t, ch)
			wantAnswer(t, r, tc.code, tc.sdk, tc.retryable, want)
			if m := status.Convert(r.err).Message(); strings.HasPrefix(m, "NOT_FOUND:") || strings.HasPrefix(m, "INVALID_ARGUMENT:") {
				t.Errorf("message keeps the agent's code prefix: %q", m)
			}
		})
	}
}

// The relay's own refusals: each before any command runs.
func TestPlatformRelayErrorClasses(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	send := func(req *imessagev1.SendTextMessageRequest) callResult {
		return awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
			return c.msgs.SendTextMessage(c.ctx(""), req, o...)
		}))
	}

	r := send(&imessagev1.SendTextMessageRequest{ChatGuid: "iMessage;x;+15555550123", Text: "hi"})
	wantAnswer(t, r, codes.InvalidArgument, sdkInvalidArgument, "false", map[string]string{"field": "chat_guid"})
	r = send(&imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi", EffectId: proto.String("com.example.nope")})
	wantAnswer(t, r, codes.InvalidArgument, sdkInvalidArgument, "false", map[string]string{"field": "effect_id", "chat_guid": dmGUID})
	if !strings.Contains(status.Convert(r.err).Message(), "confetti") {
		t.Errorf("an unknown effect's message does not list the valid ones: %v", r.err)
	}
	r = send(&imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: strings.Repeat("x", 65<<10)})
	wantAnswer(t, r, codes.InvalidArgument, sdkInvalidArgument, "false", nil)
	r = send(&imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi", Formatting: []*imessagev1.TextFormat{{Type: "bold", Length: 2}}})
	wantAnswer(t, r, codes.Unimplemented, sdkOperationNotSupported, "false", nil)

	r = awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SetReaction(c.ctx(""), &imessagev1.SetReactionRequest{
			Target:   &imessagev1.MessageTarget{ChatGuid: dmGUID, MessageGuid: "M1"},
			Reaction: &imessagev1.MessageReaction{Kind: imessagev1.MessageReactionKind_MESSAGE_REACTION_KIND_STICKER}, IsSet: true,
		}, o...)
	}))
	wantAnswer(t, r, codes.InvalidArgument, sdkInvalidArgument, "false", map[string]string{"field": "reaction.kind", "message_guid": "M1"})
	r = awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.SetDisplayNameResponse, error) {
		return c.groups.SetDisplayName(c.ctx(""), &imessagev1.SetDisplayNameRequest{ChatGuid: dmGUID, DisplayName: "x"}, o...)
	}))
	wantAnswer(t, r, codes.InvalidArgument, sdkInvalidArgument, "false", map[string]string{"field": "chat_guid"})

	r = awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.GetMessageResponse, error) {
		return c.msgs.GetMessage(c.ctx(""), &imessagev1.GetMessageRequest{}, o...)
	}))
	wantAnswer(t, r, codes.InvalidArgument, sdkInvalidArgument, "false", map[string]string{"field": "message_guid"})
	r = awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.GetChatResponse, error) {
		return c.chats.GetChat(c.ctx(""), &imessagev1.GetChatRequest{ChatGuid: "iMessage;x;" + peer}, o...)
	}))
	wantAnswer(t, r, codes.InvalidArgument, sdkInvalidArgument, "false", map[string]string{"field": "chat_guid"})
	a.noCommand(100 * time.Millisecond)

	// A line no Mac has ever served.
	lonely, _, _ := srv.CreateAPIToken(context.Background(), []string{"+15550000077"}, false)
	lc := newAPIClient(t, srv, lonely)
	r = awaitCall(t, startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return lc.msgs.SendTextMessage(lc.ctx(""), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	}))
	wantAnswer(t, r, codes.Unavailable, sdkServiceUnavailable, "true", map[string]string{"chat_guid": dmGUID})
}

// A call waiting when the relay shuts down is answered (the command goes
// on, so a retry is not safe).
func TestPlatformCallAnsweredAtShutdown(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	ch := startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
		return c.msgs.SendTextMessage(c.ctx("k"), &imessagev1.SendTextMessageRequest{ChatGuid: dmGUID, Text: "hi"}, o...)
	})
	a.nextCommand()
	closed := make(chan error, 1)
	go func() { closed <- srv.Close() }()
	r := awaitCall(t, ch)
	wantAnswer(t, r, codes.Unavailable, sdkServiceUnavailable, "false", map[string]string{"last_state": stateDispatched})
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// The relay's name for "never reached the helper" is the bridge's.
func TestHelperNotSentStateIsTheBridges(t *testing.T) {
	if helperNotSentState != bridge.StateNotSent {
		t.Fatalf("relay %q, bridge %q", helperNotSentState, bridge.StateNotSent)
	}
}

// docs/platform-api.md shows the error table the code applies, row for row.
func TestErrorTableIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/platform-api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, c := range errorTable() {
		if row := c.docRow(); !strings.Contains(doc, row) {
			t.Errorf("docs/platform-api.md lacks the row\n%s", row)
		}
	}
}

// platformText respells chat GUIDs inside free text, whatever the case.
func TestPlatformText(t *testing.T) {
	for in, want := range map[string]string{
		"no chat iMessage;-;+15555550123 on this Mac": "no chat any;-;+15555550123 on this Mac",
		"chat SMS;+;chat1 and imessage;-;a@b.c":       "chat any;+;chat1 and any;-;a@b.c",
		"any;-;+1 stays":                              "any;-;+1 stays",
		"nothing here":                                "nothing here",
	} {
		if got := platformText(in); got != want {
			t.Errorf("platformText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := trailerValue("a\nb%c✓"); got != "a%0Ab%25c%E2%9C%93" {
		t.Errorf("trailerValue = %q", got)
	}
}

// A store that cannot be reached is UNAVAILABLE to the SDK, to be retried;
// any other store failure stays INTERNAL.
func TestStoreFaultTellsUnreachableFromBroken(t *testing.T) {
	down := storeFault(&pgconn.PgError{Code: "57P01"}, "the relay could not store the command")
	if down.class.status != codes.Unavailable || down.class.sdk != sdkServiceUnavailable || !strings.Contains(down.msg, "cannot be reached") {
		t.Fatalf("PostgreSQL shutting down: %+v", down)
	}
	broken := storeFault(errors.New("constraint failed"), "the relay could not store the command")
	if broken.class.status != codes.Internal || broken.msg != "the relay could not store the command" {
		t.Fatalf("a failed write: %+v", broken)
	}
}
