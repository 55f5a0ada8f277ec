package relay

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// The platform API: the gRPC services of photon.imessage.v1 that the
// platform's SDK (spectrum-ts) speaks, served for the lines this relay's
// agents hold, so an unmodified SDK application runs on a self-hosted
// fleet. docs/platform-api.md has the method table. Every method not yet
// served answers UNIMPLEMENTED (the generated Unimplemented servers), but
// only after the caller's token is checked: a wrong or revoked token gets
// UNAUTHENTICATED on every call, streams included.

// apiMethodPrefix is the full-method prefix of every platform API call.
const apiMethodPrefix = "/photon.imessage.v1."

// registerAPI adds the platform API's services to srv.
func (s *Server) registerAPI(srv *grpc.Server) {
	imessagev1.RegisterMessageServiceServer(srv, &messageAPI{s: s})
	imessagev1.RegisterChatServiceServer(srv, &chatAPI{s: s})
	imessagev1.RegisterGroupServiceServer(srv, &groupAPI{s: s})
	imessagev1.RegisterPollServiceServer(srv, &pollAPI{s: s})
	imessagev1.RegisterAttachmentServiceServer(srv, &attachmentAPI{s: s})
	imessagev1.RegisterEventServiceServer(srv, &eventAPI{s: s})
}

type messageAPI struct {
	imessagev1.UnimplementedMessageServiceServer
	s *Server
}

type chatAPI struct {
	imessagev1.UnimplementedChatServiceServer
	s *Server
}

type groupAPI struct {
	imessagev1.UnimplementedGroupServiceServer
	s *Server
}

type pollAPI struct {
	imessagev1.UnimplementedPollServiceServer
	s *Server
}

type attachmentAPI struct {
	imessagev1.UnimplementedAttachmentServiceServer
	s *Server
}

type eventAPI struct {
	imessagev1.UnimplementedEventServiceServer
	s *Server
}

// apiCallerKey carries the authenticated *apiCaller in a call's context
// (set by apiAuth for every platform API call).
type apiCallerKey struct{}

// apiAuth checks the bearer token of a platform API call and returns the
// context carrying its caller. Agents' LineRelay calls are not its business
// (they authenticate in their handlers), so it passes them through.
func (s *Server) apiAuth(ctx context.Context, method string) (context.Context, error) {
	if !strings.HasPrefix(method, apiMethodPrefix) {
		return ctx, nil
	}
	tok, err := bearerToken(ctx)
	if err != nil {
		return nil, err
	}
	// Not cancellable: the lookup is one indexed row, over sooner than a
	// cancellation could matter, and the SQLite driver starts a goroutine
	// for every query whose context can be cancelled (to interrupt it).
	c, err := s.store.apiCaller(context.WithoutCancel(ctx), tok)
	if err != nil {
		s.log.Error("platform API: token lookup failed", "err", err)
		// With the trailers the SDK reads, as every other failure of a
		// call: without them its error's code says internalError. The
		// check comes before anything the call does, so a retry is safe.
		return nil, newAPIError(classTokenCheck, "the relay could not check the token; retry").send(ctx)
	}
	if c == nil {
		return nil, status.Error(codes.Unauthenticated, "the token is not valid (unknown or revoked)")
	}
	return context.WithValue(ctx, apiCallerKey{}, c), nil
}

func (s *Server) apiUnaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := s.apiAuth(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) apiStreamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := s.apiAuth(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &callerStream{ServerStream: ss, ctx: ctx})
}

// callerStream is a server stream whose context carries the caller.
type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *callerStream) Context() context.Context { return c.ctx }
