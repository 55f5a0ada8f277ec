package relay

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// A download joins two calls: the app's DownloadAttachment, which submits
// a fetch_attachment command and waits, and the agent's PutAttachment,
// which carries the file. They meet in a pipe keyed by the command id; the
// bytes pass through without being stored, a few chunks at a time, so a
// slow app slows the agent (gRPC flow control) rather than filling memory.
// When the two calls are on different replicas the file goes through the
// store instead (api_attachments_relayed.go).

// pipeDepth is how many frames wait between the agent and the app.
const pipeDepth = 4

// downloadPipes holds the open pipes; the zero value is ready to use.
type downloadPipes struct {
	mu sync.Mutex
	m  map[string]*downloadPipe // guarded by mu
}

// downloadPipe is one download's meeting point.
type downloadPipe struct {
	parts chan *linev1.AttachmentPart // closed by the agent's side when it ends
	gone  chan struct{}               // closed when the app's side stops reading
	// claimed and complete are guarded by downloadPipes.mu: one
	// PutAttachment may take the pipe, and complete says it delivered the
	// whole file before closing parts.
	claimed, complete bool
}

// open makes the pipe of command id; close removes it.
func (d *downloadPipes) open(id string) *downloadPipe {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]*downloadPipe{}
	}
	p := &downloadPipe{parts: make(chan *linev1.AttachmentPart, pipeDepth), gone: make(chan struct{})}
	d.m[id] = p
	return p
}

func (d *downloadPipes) close(id string, p *downloadPipe) {
	d.mu.Lock()
	defer d.mu.Unlock()
	close(p.gone)
	if d.m[id] == p {
		delete(d.m, id)
	}
}

// claim gives the pipe of id to one PutAttachment; nil when nobody waits.
func (d *downloadPipes) claim(id string) *downloadPipe {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.m[id]
	if p == nil || p.claimed {
		return nil
	}
	p.claimed = true
	return p
}

// end closes the agent's side; ok says the whole file went through.
func (d *downloadPipes) end(p *downloadPipe, ok bool) {
	d.mu.Lock()
	p.complete = ok
	d.mu.Unlock()
	close(p.parts)
}

// taken reports whether a PutAttachment has claimed p.
func (d *downloadPipes) taken(p *downloadPipe) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return p.claimed
}

func (d *downloadPipes) completed(p *downloadPipe) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return p.complete
}

// putAttachment serves the agent's PutAttachment: only for a
// fetch_attachment dispatched to it and unfinished, only while the app
// still waits, the header first, then exactly the bytes the header names.
func (s *Server) putAttachment(stream linev1.LineRelay_PutAttachmentServer) error {
	ctx := stream.Context()
	agentID, err := s.authenticate(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	head := first.GetHeader()
	if head == nil {
		return status.Error(codes.InvalidArgument, "the first frame must be the header")
	}
	id := head.GetCommandId()
	r, err := s.store.command(ctx, id)
	if err != nil {
		s.log.Error("put attachment: read command", "err", err)
		return status.Error(codes.Internal, "the relay could not read the command")
	}
	cmd := &linev1.Command{}
	if r == nil || r.agentID != agentID || !unfinished(r.state) || proto.Unmarshal(r.command, cmd) != nil || cmd.GetFetchAttachment() == nil {
		return status.Error(codes.NotFound, "no fetch_attachment in progress with this id for this agent")
	}
	if g := head.GetAttachment().GetGuid(); g != cmd.GetFetchAttachment().GetAttachmentGuid() {
		return status.Error(codes.InvalidArgument, "the header names another attachment than the command")
	}
	size := head.GetAttachment().GetSize()
	if size > command.MaxAttachmentBytes {
		return status.Errorf(codes.InvalidArgument, "the file is %d bytes; at most %d are taken", size, command.MaxAttachmentBytes)
	}
	ok := false
	var deliver func(*linev1.AttachmentPart) error
	if p := s.downloads.claim(id); p != nil {
		defer func() { s.downloads.end(p, ok) }()
		deliver = func(part *linev1.AttachmentPart) error {
			select {
			case p.parts <- part:
				return nil
			case <-p.gone:
				return status.Error(codes.FailedPrecondition, "the caller stopped waiting for the file")
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	} else if s.fleet != nil {
		// The caller may wait on another replica (api_attachments_relayed.go).
		w, err := s.store.openRelayed(ctx, id, size, s.now())
		if err != nil {
			s.log.Error("put attachment: keep the file for another replica", "command_id", id, "err", err)
			return status.Error(codes.FailedPrecondition, "the relay could not keep the file for the replica the caller waits on")
		}
		// A transfer that breaks off leaves nothing behind for the
		// pruner: its parts go at once.
		defer func() {
			if !ok {
				if err := s.store.dropRelayed(context.WithoutCancel(ctx), id); err != nil {
					s.log.Warn("put attachment: drop a broken-off copy (pruned when it expires)", "command_id", id, "err", err)
				}
			}
		}()
		deliver = func(part *linev1.AttachmentPart) error {
			if err := w.put(ctx, part); err != nil {
				s.log.Error("put attachment: keep a part for another replica", "command_id", id, "err", err)
				return status.Error(codes.Unavailable, "the relay could not keep the file for the replica the caller waits on")
			}
			return nil
		}
	} else {
		return status.Error(codes.FailedPrecondition, "nobody waits for this file any more")
	}
	if err := deliver(first); err != nil {
		return err
	}
	var got uint64
	for {
		part, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		chunk := part.GetChunk()
		if part.GetHeader() != nil || len(chunk) == 0 || got+uint64(len(chunk)) > size {
			return status.Errorf(codes.InvalidArgument, "more than the %d bytes the header names, an empty chunk, or a second header", size)
		}
		got += uint64(len(chunk))
		if err := deliver(part); err != nil {
			return err
		}
	}
	if got != size {
		return status.Errorf(codes.InvalidArgument, "got %d of the %d bytes the header names", got, size)
	}
	ok = true
	return stream.SendAndClose(&linev1.PutAttachmentResponse{})
}

// downloadResult is the fetch command's outcome.
type downloadResult struct {
	snap *linev1.Snapshot
	err  error
}

// relayDownload submits the fetch command for guid on line and forwards
// the agent's file to the app as it arrives. Nothing of the file is sent
// before the agent's header, so an agent's failure (no such attachment,
// still transferring, refused) reaches the app as that typed error.
func (s *Server) relayDownload(w *apiWrite, line, guid string, stream imessagev1.AttachmentService_DownloadAttachmentServer) error {
	p := s.downloads.open(w.commandID)
	defer s.downloads.close(w.commandID, p)
	results := make(chan downloadResult, 1)
	go func() {
		_, snap, err := w.run(line, nil, &linev1.Command{Kind: &linev1.Command_FetchAttachment{FetchAttachment: &linev1.FetchAttachment{AttachmentGuid: guid}}})
		results <- downloadResult{snap, err}
	}()
	var (
		head     *linev1.Attachment
		sent     uint64
		finished *downloadResult
		parts    = p.parts
	)
	for parts != nil || finished == nil {
		select {
		case part, open := <-parts:
			if !open {
				parts = nil
				if head != nil && !s.downloads.completed(p) {
					return w.fail(newAPIError(classRelayFault, "the agent's transfer broke off after %d of %d bytes", sent, head.GetSize()))
				}
				continue
			}
			var resp *imessagev1.DownloadAttachmentResponse
			if h := part.GetHeader(); h != nil {
				head = h.GetAttachment()
				resp = &imessagev1.DownloadAttachmentResponse{Payload: &imessagev1.DownloadAttachmentResponse_Header{Header: &imessagev1.DownloadHeader{Attachment: inboundInfo(head)}}}
			} else {
				sent += uint64(len(part.GetChunk()))
				resp = &imessagev1.DownloadAttachmentResponse{Payload: &imessagev1.DownloadAttachmentResponse_PrimaryChunk{PrimaryChunk: part.GetChunk()}}
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		case res := <-results:
			finished = &res
			if res.err != nil {
				var e *apiError
				if errors.As(res.err, &e) && e.class.status == codes.NotFound {
					e.class = classAttachmentNotFound
				}
				return res.err
			}
			if head == nil && parts != nil && !s.downloads.taken(p) && s.fleet != nil {
				// The agent's PutAttachment, answered before its result,
				// did not come here: it went to the replica holding the
				// agent's stream, which kept the file in the store.
				return s.sendRelayed(w, stream)
			}
			if head == nil && parts == nil {
				return w.fail(newAPIError(classRelayFault, "the agent reported success without sending the file"))
			}
		}
	}
	if head == nil {
		return w.fail(newAPIError(classRelayFault, "the agent reported success without sending the file"))
	}
	return nil
}

// sendRelayed streams the copy of w's file another replica kept
// (api_attachments_relayed.go) to the app, checks it is whole, and
// deletes it.
func (s *Server) sendRelayed(w *apiWrite, stream imessagev1.AttachmentService_DownloadAttachmentServer) error {
	ctx := stream.Context()
	defer func() {
		if err := s.store.dropRelayed(context.WithoutCancel(ctx), w.commandID); err != nil {
			s.log.Warn("drop a relayed download (pruned when it expires)", "command_id", w.commandID, "err", err)
		}
	}()
	var head *linev1.Attachment
	var sent uint64
	for i := 0; ; i++ {
		part, ok, err := s.store.relayedPart(ctx, w.commandID, i)
		switch {
		case err != nil && ctx.Err() != nil:
			return status.FromContextError(ctx.Err()).Err()
		case err != nil:
			s.log.Error("platform API: read a relayed download", "command_id", w.commandID, "err", err)
			return w.fail(storeFault(err, "the relay could not read the file another replica kept"))
		case !ok && (head == nil || sent != head.GetSize()):
			return w.fail(newAPIError(classRelayFault, "the agent reported success without sending the whole file"))
		case !ok:
			return nil
		}
		var resp *imessagev1.DownloadAttachmentResponse
		switch h := part.GetHeader(); {
		case i == 0 && h != nil:
			head = h.GetAttachment()
			resp = &imessagev1.DownloadAttachmentResponse{Payload: &imessagev1.DownloadAttachmentResponse_Header{Header: &imessagev1.DownloadHeader{Attachment: inboundInfo(head)}}}
		case i > 0 && h == nil:
			sent += uint64(len(part.GetChunk()))
			resp = &imessagev1.DownloadAttachmentResponse{Payload: &imessagev1.DownloadAttachmentResponse_PrimaryChunk{PrimaryChunk: part.GetChunk()}}
		default:
			return w.fail(newAPIError(classRelayFault, "the file another replica kept is out of order"))
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// inboundInfo is an agent's attachment as the API describes it.
func inboundInfo(a *linev1.Attachment) *imessagev1.AttachmentInfo {
	info := &imessagev1.AttachmentInfo{
		Guid: a.GetGuid(), FileName: a.GetFileName(), MimeType: a.GetMimeType(), Uti: a.GetUti(),
		TotalBytes: int64(a.GetSize()), IsOutgoing: a.GetOutgoing(), IsSticker: a.GetSticker(),
		TransferState: imessagev1.TransferState(a.GetTransferState()),
	}
	return info
}
