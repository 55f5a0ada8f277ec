package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"path/filepath"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// Attachments both ways on the platform API (docs/platform-api.md,
// "Attachments"):
//
//   - UploadAttachment stores the file in relay.db for Options.UploadTTL,
//     usable only by the token that made it, and answers its GUID;
//   - SendAttachmentMessage is one send_attachment command whose BlobRef
//     names the upload itself (no copy), answered like SendTextMessage;
//   - DownloadAttachment asks the agent for an inbound attachment with one
//     fetch_attachment command and streams the bytes the agent sends with
//     PutAttachment (api_attachments_pipe.go) to the caller as they come.
//     The GUID of one of the token's own uploads is served from relay.db.

// uploadOverhead is what an UploadAttachment request may carry beyond its
// file: the name, the framing, a companion's header.
const uploadOverhead = 64 << 10

// maxUploadName bounds an upload's cleaned file name, in bytes.
const maxUploadName = 255

// attachmentLineScan bounds how many of a pool's latest events a download
// looks through for the line that received the attachment.
const attachmentLineScan = 20000

// uploadGUIDPrefix starts every upload's GUID, so a download can tell one
// from an inbound attachment's without a lookup.
const uploadGUIDPrefix = "upload-"

// UploadAttachment stores a file for a later SendAttachmentMessage.
func (a *attachmentAPI) UploadAttachment(ctx context.Context, req *imessagev1.UploadAttachmentRequest) (*imessagev1.UploadAttachmentResponse, error) {
	resp, err := a.s.uploadAttachment(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) uploadAttachment(ctx context.Context, req *imessagev1.UploadAttachmentRequest) (*imessagev1.UploadAttachmentResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	data := req.GetData()
	switch {
	case req.Companion != nil:
		return nil, w.fail(newAPIError(classNotServed, "companion files (a Live Photo's video) are not served by line-relay; upload the photo alone"))
	case len(data) == 0:
		return nil, w.fail(badRequest("data", "data is empty: give the file's bytes"))
	case len(data) > s.opts.MaxUploadBytes:
		return nil, w.fail(badRequest("data", fmt.Sprintf("data is %d bytes; at most %d are accepted", len(data), s.opts.MaxUploadBytes)))
	}
	name := cleanFileName(req.GetFileName())
	now := s.now()
	b, ref := newPendingBlob(data)
	u := &upload{
		guid: newUploadGUID(), tokenID: w.caller.tokenID, blobID: b.id, fileName: name, mimeType: mimeOf(name, data),
		sha256: ref.GetSha256(), size: len(data), created: now, expires: now.Add(s.opts.UploadTTL),
	}
	if err := s.store.insertUpload(ctx, u, b); err != nil {
		s.log.Error("platform API: store upload", "token_id", w.caller.tokenID, "err", err)
		return nil, w.fail(storeFault(err, "the relay could not store the file"))
	}
	s.log.Info("platform API: file uploaded", "token_id", w.caller.tokenID, "attachment_guid", u.guid, "bytes", u.size, "expires", u.expires)
	return &imessagev1.UploadAttachmentResponse{Attachment: uploadInfo(u)}, nil
}

// newUploadGUID is a fresh, unguessable upload GUID.
func newUploadGUID() string {
	var b [16]byte
	rand.Read(b[:])
	return uploadGUIDPrefix + strings.ToUpper(hex.EncodeToString(b[:]))
}

// uploadInfo is an upload as the API describes it.
func uploadInfo(u *upload) *imessagev1.AttachmentInfo {
	return &imessagev1.AttachmentInfo{
		Guid: u.guid, FileName: u.fileName, MimeType: u.mimeType, TotalBytes: int64(u.size),
		IsOutgoing: true, TransferState: imessagev1.TransferState_TRANSFER_STATE_FINISHED,
	}
}

// cleanFileName keeps an untrusted file name's base name only: no path,
// no control or format characters, at most maxUploadName bytes (the
// extension kept); "attachment" when nothing is left. It is never used as
// a path by the relay; the agent's spool gives the file its own.
func cleanFileName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, strings.ToValidUTF8(name, ""))
	name = strings.TrimSpace(name)
	name = strings.TrimLeft(name, ".") // no hidden files, no "." or ".."
	name = command.CutFileName(name, maxUploadName)
	if name == "" {
		return "attachment"
	}
	return name
}

// mimeOf is the file's MIME type: from its name's extension when that is
// a known one, else sniffed from its first bytes.
func mimeOf(name string, data []byte) string {
	if t := mime.TypeByExtension(filepath.Ext(name)); t != "" {
		if mt, _, err := mime.ParseMediaType(t); err == nil {
			return mt
		}
	}
	mt, _, err := mime.ParseMediaType(http.DetectContentType(data))
	if err != nil {
		return "application/octet-stream"
	}
	return mt
}

// SendAttachmentMessage sends an uploaded file (send_attachment).
func (a *messageAPI) SendAttachmentMessage(ctx context.Context, req *imessagev1.SendAttachmentMessageRequest) (*imessagev1.MessageResponse, error) {
	resp, err := a.s.sendAttachmentMessage(ctx, req)
	return writeAnswer(ctx, resp, err)
}

func (s *Server) sendAttachmentMessage(ctx context.Context, req *imessagev1.SendAttachmentMessageRequest) (*imessagev1.MessageResponse, error) {
	w, err := s.newWrite(ctx)
	if err != nil {
		return nil, err
	}
	g, err := w.chatGUID("chat_guid", req.GetChatGuid())
	if err != nil {
		return nil, err
	}
	ref := req.GetAttachment()
	switch {
	case ref.GetAttachmentPath() != "":
		return nil, w.fail(newAPIError(classNotServed, "attachment_path is not served: line-relay never reads a caller's path; upload the file with UploadAttachment"))
	case ref.GetAttachmentGuid() == "":
		return nil, w.fail(badRequest("attachment.attachment_guid", "attachment.attachment_guid is required (the guid UploadAttachment answered)"))
	case req.GetIsAudioMessage():
		return nil, w.fail(newAPIError(classNotServed, "is_audio_message is not served by line-relay; send the file as an attachment"))
	}
	sa := &linev1.SendAttachment{}
	content := &imessagev1.MessageContent{}
	if sa.Effect, err = w.effect(req.EffectId, content); err != nil {
		return nil, err
	}
	if sa.ReplyTo, err = w.replyTo(req.GetReplyTo()); err != nil {
		return nil, err
	}
	line, err := w.line(g)
	if err != nil {
		return nil, err
	}
	// The upload is kept for as long as the command may still fetch it:
	// its deadline, the grace after it, and the wait's own slack.
	now := s.now()
	u, err := s.store.claimUpload(ctx, ref.GetAttachmentGuid(), w.caller.tokenID, now, now.Add(s.opts.DefaultCommandTimeout+s.opts.ResultGrace+apiWaitSlack))
	if err != nil {
		s.log.Error("platform API: read upload", "token_id", w.caller.tokenID, "err", err)
		return nil, w.fail(storeFault(err, "the relay could not read the upload"))
	}
	if u == nil {
		return nil, w.fail(uploadNotFound())
	}
	sa.Source = &linev1.SendAttachment_Blob{Blob: &linev1.BlobRef{Id: u.blobID, Size: uint64(u.size), Sha256: u.sha256}}
	sa.FileName, sa.MimeType = u.fileName, u.mimeType
	if n := ref.GetAttachmentName(); n != "" {
		sa.FileName = cleanFileName(n)
	}
	w.relayBlob = true
	r, snap, err := w.run(line, req.ClientMessageId, &linev1.Command{
		Target: &linev1.Command_ChatGuid{ChatGuid: req.GetChatGuid()},
		Kind:   &linev1.Command_SendAttachment{SendAttachment: sa},
	})
	if err != nil {
		return nil, err
	}
	info := uploadInfo(u)
	info.FileName = sa.FileName
	content.Attachments = []*imessagev1.AttachmentInfo{info}
	m, err := w.messageOf(r, snap, content)
	if err != nil {
		return nil, err
	}
	if sa.ReplyTo != nil {
		m.ReplyTargetGuid = proto.String(sa.ReplyTo.GetMessageGuid())
		m.ThreadOriginatorGuid = proto.String(sa.ReplyTo.GetMessageGuid())
	}
	return &imessagev1.MessageResponse{Message: m}, nil
}

func uploadNotFound() *apiError {
	return newAPIError(classAttachmentNotFound, "no such upload for this token: it expired (uploads are kept for a limited time) or was made with another token; upload the file again")
}

// DownloadAttachment streams an attachment's bytes: a header, then the
// file in chunks.
func (a *attachmentAPI) DownloadAttachment(req *imessagev1.DownloadAttachmentRequest, stream imessagev1.AttachmentService_DownloadAttachmentServer) error {
	ctx := stream.Context()
	err := a.s.downloadAttachment(ctx, req, stream)
	var e *apiError
	if errors.As(err, &e) {
		return e.send(ctx)
	}
	return err
}

func (s *Server) downloadAttachment(ctx context.Context, req *imessagev1.DownloadAttachmentRequest, stream imessagev1.AttachmentService_DownloadAttachmentServer) error {
	w, err := s.newWrite(ctx)
	if err != nil {
		return err
	}
	guid := req.GetAttachmentGuid()
	switch {
	case guid == "":
		return w.fail(badRequest("attachment_guid", "attachment_guid is required"))
	case len(guid) > command.MaxChatGUIDBytes:
		return w.fail(badRequest("attachment_guid", fmt.Sprintf("attachment_guid is %d bytes; at most %d are accepted", len(guid), command.MaxChatGUIDBytes)))
	case strings.HasPrefix(guid, uploadGUIDPrefix):
		return s.downloadUpload(ctx, w, guid, stream)
	}
	line, aerr := s.lineForAttachment(ctx, w.caller, guid)
	if aerr != nil {
		return w.fail(aerr)
	}
	w.commandID = "api:" + w.caller.tokenID + ":fetch:" + newAgentID()[len(agentIDPrefix):]
	return s.relayDownload(w, line, guid, stream)
}

// downloadUpload serves one of the token's own uploads from relay.db.
func (s *Server) downloadUpload(ctx context.Context, w *apiWrite, guid string, stream imessagev1.AttachmentService_DownloadAttachmentServer) error {
	u, err := s.store.upload(ctx, guid, w.caller.tokenID, s.now())
	if err != nil {
		s.log.Error("platform API: read upload", "token_id", w.caller.tokenID, "err", err)
		return w.fail(storeFault(err, "the relay could not read the upload"))
	}
	if u == nil {
		return w.fail(uploadNotFound())
	}
	if err := stream.Send(&imessagev1.DownloadAttachmentResponse{Payload: &imessagev1.DownloadAttachmentResponse_Header{
		Header: &imessagev1.DownloadHeader{Attachment: uploadInfo(u)}}}); err != nil {
		return err
	}
	for i := 0; ; i++ {
		chunk, ok, err := s.store.uploadChunk(ctx, u, i)
		switch {
		case err != nil && ctx.Err() != nil:
			return status.FromContextError(ctx.Err()).Err()
		case err != nil:
			s.log.Error("platform API: read upload chunk", "attachment_guid", guid, "err", err)
			return status.Error(codes.Internal, "the relay could not read the upload")
		case !ok:
			return nil
		}
		if err := stream.Send(&imessagev1.DownloadAttachmentResponse{Payload: &imessagev1.DownloadAttachmentResponse_PrimaryChunk{PrimaryChunk: chunk}}); err != nil {
			return err
		}
	}
}

// lineForAttachment is the line whose Mac has the attachment: a dedicated
// token's one line; for a pool, the line of the latest event that named
// the GUID, else the first served line of the pool.
func (s *Server) lineForAttachment(ctx context.Context, c *apiCaller, guid string) (string, *apiError) {
	if !c.pool {
		return c.lines[0], nil
	}
	in := "(?" + strings.Repeat(", ?", len(c.lines)-1) + ")"
	args := []any{}
	for _, l := range c.lines {
		args = append(args, l)
	}
	args = append(args, guid)
	var line string
	// Bounded: the newest attachmentLineScan events of the token's lines.
	err := s.store.db.QueryRowContext(ctx, `SELECT line_key FROM (SELECT line_key, event FROM events WHERE line_key IN `+in+`
		ORDER BY relay_seq DESC LIMIT `+fmt.Sprint(attachmentLineScan)+`) AS recent WHERE `+s.store.d.eventContains+` LIMIT 1`, args...).Scan(&line)
	if err == nil {
		return line, nil
	}
	line, err = firstServedLine(ctx, s.store.db, c.lines)
	switch {
	case err != nil:
		s.log.Error("platform API: pick a pool line", "token_id", c.tokenID, "err", err)
		return "", storeFault(err, "the relay could not read its line bindings")
	case line == "":
		return "", noPoolLine()
	}
	return line, nil
}
