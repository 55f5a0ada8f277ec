package relay

import (
	"context"

	"github.com/line-agent/line-agent/pkg/servertime"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// service adapts Server to the generated LineRelayServer interface, keeping
// the RPC surface separate from the relay's own exported API.
type service struct {
	linev1.UnimplementedLineRelayServer
	s *Server
}

// Enroll trades a project token for an agent identity (see auth.go).
func (v *service) Enroll(ctx context.Context, req *linev1.EnrollRequest) (*linev1.EnrollResponse, error) {
	return v.s.enroll(ctx, req)
}

// Refresh trades the agent secret for a new access token. Its answer,
// a refusal too, says the relay's time: line-agent doctor measures the
// Mac's clock skew with an empty Refresh (pkg/servertime).
func (v *service) Refresh(ctx context.Context, req *linev1.RefreshRequest) (*linev1.RefreshResponse, error) {
	servertime.Set(ctx)
	return v.s.refresh(ctx, req)
}

// Connect serves the one long-lived stream (see stream.go).
func (v *service) Connect(stream linev1.LineRelay_ConnectServer) error {
	return v.s.connect(stream)
}

// FetchBlob streams a large payload of a command dispatched to the caller
// (see blobs.go).
func (v *service) FetchBlob(req *linev1.FetchBlobRequest, stream linev1.LineRelay_FetchBlobServer) error {
	return v.s.fetchBlob(req, stream)
}

// PutAttachment takes the file of a fetch_attachment dispatched to the
// caller (see api_attachments_pipe.go).
func (v *service) PutAttachment(stream linev1.LineRelay_PutAttachmentServer) error {
	return v.s.putAttachment(stream)
}
