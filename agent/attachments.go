package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Inbound attachment files on request (fetch_attachment, docs/protocol.md):
// the relay names an attachment GUID, the agent finds its row in chat.db,
// waits (bounded) until Messages has the whole file, and streams it to the
// relay with PutAttachment, never inside a Connect frame. Only a regular
// file inside Messages' attachments folder is ever read, whatever path the
// row holds: chat.db is Messages' record, and a damaged or hostile row must
// not turn this into a way to read any file of the user's.

// DefaultAttachmentWait is how long a fetch waits for a file Messages is
// still receiving before it answers UNAVAILABLE (retryable).
const DefaultAttachmentWait = 30 * time.Second

// attachmentChunk is the most file data one PutAttachment frame carries.
const attachmentChunk = 512 << 10

// attachmentBackstop is how often a waiting fetch looks at chat.db again
// when no transfer event came: events are reported only for rows inside
// the tailer's window, and a file may finish outside it.
const attachmentBackstop = 2 * time.Second

// messagesAttachmentsPrefix is how Messages spells its attachments folder in
// attachment.filename.
const messagesAttachmentsPrefix = "~/Library/Messages/Attachments/"

// AttachmentLookup finds an attachment row; *chatdb.Reader is one. It
// returns an error wrapping chatdb.ErrNotFound for an unknown GUID.
type AttachmentLookup interface {
	LookupAttachment(ctx context.Context, guid string) (chatdb.AttachmentFile, error)
}

// AttachmentSource is what the agent needs to serve attachment files.
type AttachmentSource struct {
	Lookup AttachmentLookup
	// Dir is Messages' attachments folder (~/Library/Messages/Attachments
	// on a Mac; the simulated Messages has its own). Files are served only
	// from inside it, after symbolic links are resolved.
	Dir string
	// Home is what a leading "~" means in chat.db's paths other than the
	// attachments folder's own spelling; default the user's home.
	Home string
	// Wait bounds how long a fetch waits for a transfer to finish
	// (default DefaultAttachmentWait).
	Wait time.Duration
	// MaxBytes caps a served file (default command.MaxAttachmentBytes).
	MaxBytes int64
}

// attachmentServer runs fetch_attachment commands.
type attachmentServer struct {
	src     AttachmentSource
	client  linev1.LineRelayClient
	tokens  *tokenSource
	waiters transferWaiters
}

func newAttachmentServer(src AttachmentSource, client linev1.LineRelayClient, tokens *tokenSource) *attachmentServer {
	if src.Wait <= 0 {
		src.Wait = DefaultAttachmentWait
	}
	if src.MaxBytes <= 0 {
		src.MaxBytes = command.MaxAttachmentBytes
	}
	if src.Home == "" {
		src.Home, _ = os.UserHomeDir()
	}
	return &attachmentServer{src: src, client: client, tokens: tokens}
}

// serve runs one fetch_attachment: find, wait, confine, send.
func (s *attachmentServer) serve(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	guid := cmd.GetFetchAttachment().GetAttachmentGuid()
	if strings.TrimSpace(guid) == "" {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "fetch_attachment.attachment_guid is required")
	}
	af, err := s.whole(ctx, cmd.GetLine(), guid, report)
	if err != nil {
		return nil, err
	}
	f, info, err := s.open(af)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := s.send(ctx, cmd.GetId(), af, f, info.Size()); err != nil {
		return nil, err
	}
	return &linev1.Snapshot{MessageGuid: af.MessageGUID, ChatGuid: af.ChatGUID}, nil
}

// whole returns the attachment once Messages has the whole file, waiting
// for it within the bound.
func (s *attachmentServer) whole(ctx context.Context, line, guid string, report func(*linev1.CommandUpdate)) (chatdb.AttachmentFile, error) {
	// Registered before the first look: a transfer that ends between the
	// look and the wait still wakes it.
	done, release := s.waiters.watch(guid)
	defer release()
	limit := time.NewTimer(s.src.Wait)
	defer limit.Stop()
	backstop := time.NewTicker(attachmentBackstop)
	defer backstop.Stop()
	reported := false
	for {
		af, err := s.src.Lookup.LookupAttachment(ctx, guid)
		switch {
		case errors.Is(err, chatdb.ErrNotFound):
			return af, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "no attachment %s in chat.db", guid)
		case err != nil && ctx.Err() != nil:
			return af, ctx.Err()
		case err != nil:
			return af, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "chat.db could not be read: %v", err)
		case af.Line != "" && command.NormalizeLine(af.Line) != command.NormalizeLine(line):
			// Another line's message: as far as this line goes, there
			// is no such attachment.
			return af, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "no attachment %s in chat.db", guid)
		case af.Finished():
			return af, nil
		}
		if !reported {
			reported = true
			report(&linev1.CommandUpdate{State: linev1.CommandState_COMMAND_STATE_IN_PROGRESS,
				Progress: &linev1.Progress{Stage: "transferring", Total: uint64(max(af.Size, 0))},
				Detail:   fmt.Sprintf("Messages is still receiving the file (transfer_state %d)", af.TransferState)})
		}
		select {
		case <-done:
			done, release = s.rewatch(guid, release)
		case <-backstop.C:
		case <-limit.C:
			return af, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
				"Messages is still receiving attachment %s (transfer_state %d) after %s; try again later", guid, af.TransferState, s.src.Wait)
		case <-ctx.Done():
			return af, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
				"Messages was still receiving attachment %s (transfer_state %d) at the command's deadline; try again later", guid, af.TransferState)
		}
	}
}

// rewatch swaps a fired watch for a fresh one.
func (s *attachmentServer) rewatch(guid string, release func()) (<-chan struct{}, func()) {
	release()
	return s.waiters.watch(guid)
}

// refused is the answer for a row whose file may not be served.
func refused(guid, why string) error {
	return command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "attachment %s is not served: %s", guid, why)
}

// localPath is where the row's file is on this Mac, with "~" expanded:
// Messages' own spelling of its folder means the configured folder.
func (s *attachmentServer) localPath(stored string) (string, bool) {
	switch {
	case strings.HasPrefix(stored, messagesAttachmentsPrefix):
		return filepath.Join(s.src.Dir, filepath.FromSlash(stored[len(messagesAttachmentsPrefix):])), true
	case strings.HasPrefix(stored, "~/") && s.src.Home != "":
		return filepath.Join(s.src.Home, filepath.FromSlash(stored[2:])), true
	case filepath.IsAbs(stored):
		return filepath.Clean(stored), true
	}
	return "", false
}

// open opens the row's file if, once every symbolic link is resolved, it
// is a regular file inside the attachments folder and within the cap.
func (s *attachmentServer) open(af chatdb.AttachmentFile) (*os.File, fs.FileInfo, error) {
	if af.Path == "" {
		return nil, nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "chat.db names no file for attachment %s", af.GUID)
	}
	p, ok := s.localPath(af.Path)
	if !ok {
		return nil, nil, refused(af.GUID, "chat.db gives a relative path")
	}
	root, err := filepath.EvalSymlinks(s.src.Dir)
	if err != nil {
		return nil, nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "Messages' attachments folder cannot be read: %v", err)
	}
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "the file of attachment %s is no longer in Messages' attachments folder", af.GUID)
	} else if err != nil {
		return nil, nil, refused(af.GUID, "its path cannot be resolved")
	}
	if rel, err := filepath.Rel(root, real); err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, nil, refused(af.GUID, "its file is outside Messages' attachments folder")
	}
	want, err := os.Lstat(real)
	if err != nil {
		return nil, nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "the file of attachment %s is no longer in Messages' attachments folder", af.GUID)
	}
	if !want.Mode().IsRegular() {
		return nil, nil, refused(af.GUID, "it is not a regular file")
	}
	if want.Size() > s.src.MaxBytes {
		return nil, nil, refused(af.GUID, fmt.Sprintf("the file is %d bytes; at most %d are served", want.Size(), s.src.MaxBytes))
	}
	f, err := os.Open(real)
	if err != nil {
		return nil, nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "the file of attachment %s cannot be opened: %v", af.GUID, err)
	}
	// The file opened must be the one judged: a path swapped for a link
	// between the check and the open is refused.
	got, err := f.Stat()
	if err != nil || !os.SameFile(want, got) {
		f.Close()
		return nil, nil, refused(af.GUID, "its file changed while it was opened")
	}
	return f, got, nil
}

// send streams the file to the relay: the header, then size bytes in
// chunks. The relay holds the caller who asked; nobody else reads it.
func (s *attachmentServer) send(ctx context.Context, commandID string, af chatdb.AttachmentFile, f io.Reader, size int64) error {
	unavailable := func(why string, err error) error {
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "could not send the file to the relay: %s: %v", why, err)
	}
	tok, err := s.tokens.token(ctx, false)
	if err != nil {
		return unavailable("no access token", err)
	}
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok))
	defer cancel()
	st, err := s.client.PutAttachment(ctx)
	if err != nil {
		return unavailable("relay unreachable", err)
	}
	name := af.Name
	if name == "" {
		name = filepath.Base(af.Path)
	}
	head := &linev1.AttachmentHeader{CommandId: commandID, Attachment: &linev1.Attachment{
		Guid: af.GUID, MimeType: af.MIME, Size: uint64(size), TransferState: int32(af.TransferState),
		FileName: name, Sticker: af.Sticker, Uti: af.UTI, Outgoing: af.Outgoing,
	}}
	if err := st.Send(&linev1.AttachmentPart{Part: &linev1.AttachmentPart_Header{Header: head}}); err != nil {
		return putError(st, err)
	}
	buf := make([]byte, attachmentChunk)
	r := io.LimitReader(f, size)
	var sent int64
	for sent < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-sent)])
		if err != nil {
			return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "the file of attachment %s changed while it was read: %v", af.GUID, err)
		}
		if err := st.Send(&linev1.AttachmentPart{Part: &linev1.AttachmentPart_Chunk{Chunk: buf[:n]}}); err != nil {
			return putError(st, err)
		}
		sent += int64(n)
	}
	if _, err := st.CloseAndRecv(); err != nil {
		return putStatus(err)
	}
	return nil
}

// putError is the relay's answer to a send that failed (the stream's
// status, which CloseAndRecv returns).
func putError(st linev1.LineRelay_PutAttachmentClient, sendErr error) error {
	if _, err := st.CloseAndRecv(); err != nil {
		return putStatus(err)
	}
	return putStatus(sendErr)
}

func putStatus(err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "the relay has no fetch of this file in progress: %v", status.Convert(err).Message())
	case codes.FailedPrecondition:
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "nobody waits for the file at the relay any more: %v", status.Convert(err).Message())
	}
	return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "could not send the file to the relay: %v", err)
}

// transferWaiters wakes the fetches waiting for an attachment's transfer to
// finish; notify is called with every batch of events the journal stored.
// The zero value is ready to use.
type transferWaiters struct {
	mu sync.Mutex
	m  map[string]*transferWait // guarded by mu
}

type transferWait struct {
	ch chan struct{}
	n  int // waiters holding it; guarded by transferWaiters.mu
}

// watch returns a channel closed when guid's transfer is next reported
// finished, and the release to call when done waiting.
func (w *transferWaiters) watch(guid string) (<-chan struct{}, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]*transferWait{}
	}
	tw := w.m[guid]
	if tw == nil {
		tw = &transferWait{ch: make(chan struct{})}
		w.m[guid] = tw
	}
	tw.n++
	var once sync.Once
	return tw.ch, func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if tw.n--; tw.n == 0 && w.m[guid] == tw {
				delete(w.m, guid)
			}
		})
	}
}

// notify wakes the waiters of every attachment the events report whole.
func (w *transferWaiters) notify(events []*linev1.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range events {
		guid := ev.GetAttachmentTransferred().GetAttachment().GetGuid()
		if tw := w.m[guid]; guid != "" && tw != nil {
			close(tw.ch)
			delete(w.m, guid)
		}
	}
}

// notifyingSink is the tailer's sink that, once a batch is committed,
// tells the waiting fetches which transfers finished.
type notifyingSink struct {
	Sink
	after func([]*linev1.Event)
}

// Commit stores the batch, then reports it.
func (n notifyingSink) Commit(ctx context.Context, events []*linev1.Event, cursor []byte) error {
	if err := n.Sink.Commit(ctx, events, cursor); err != nil {
		return err
	}
	n.after(events)
	return nil
}

// attachmentDriver is the backend's driver plus fetch_attachment, which
// reads chat.db and the attachments folder rather than driving Messages.
type attachmentDriver struct {
	messages.Driver
	fetch *attachmentServer
}

var (
	_ messages.Driver    = attachmentDriver{}
	_ messages.Resumable = attachmentDriver{}
)

// Capabilities is the driver's, plus fetching attachments.
func (d attachmentDriver) Capabilities() []linev1.Capability {
	return append(slices.Clip(d.Driver.Capabilities()), linev1.Capability_CAPABILITY_FETCH_ATTACHMENT)
}

// Execute runs fetch_attachment here and everything else in the driver.
// Offered is the driver's offer with its helper connected
// (messages.Offerer), plus the attachment download.
func (d attachmentDriver) Offered() []linev1.Capability {
	return append(messages.Offered(d.Driver), linev1.Capability_CAPABILITY_FETCH_ATTACHMENT)
}

func (d attachmentDriver) Execute(ctx context.Context, cmd *linev1.Command, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	if cmd.GetFetchAttachment() != nil {
		return d.fetch.serve(ctx, cmd, report)
	}
	return d.Driver.Execute(ctx, cmd, report)
}

// Resume forwards to the driver (only a Resumable driver saves
// checkpoints, so nothing else is ever resumed).
func (d attachmentDriver) Resume(ctx context.Context, cmd *linev1.Command, checkpoint []byte, report func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	r, ok := d.Driver.(messages.Resumable)
	if !ok {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "the driver cannot resume a command")
	}
	return r.Resume(ctx, cmd, checkpoint, report)
}
