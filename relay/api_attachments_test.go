package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

func (a *testAgent) fetchBlob(commandID, blobID string) ([]byte, error) {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.token)
	st, err := a.client.FetchBlob(ctx, &linev1.FetchBlobRequest{CommandId: commandID, BlobId: blobID})
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c.GetData()...)
	}
}

func blobRows(t *testing.T, srv *Server) int {
	t.Helper()
	var n int
	if err := srv.store.db.QueryRow(`SELECT count(*) FROM blob_chunks`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func attachmentRef(guid string) *imessagev1.AttachmentRef {
	return &imessagev1.AttachmentRef{Source: &imessagev1.AttachmentRef_AttachmentGuid{AttachmentGuid: guid}}
}

// An upload is capped, usable only by its token, sent by reference (the
// command's BlobRef is the upload's own blob, fetched by the agent with
// FetchBlob), idempotent like every write, and gone after its time to
// live.
func TestUploadsAreCappedOwnedAndExpire(t *testing.T) {
	clock := &testClock{}
	srv := startRelay(t, "", Options{MaxUploadBytes: 1000, UploadTTL: time.Minute, Now: clock.Now})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	other, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c, o := newAPIClient(t, srv, tok), newAPIClient(t, srv, other)
	files := imessagev1.NewAttachmentServiceClient(dial(t, srv))

	var md metadata.MD
	_, err := files.UploadAttachment(c.ctx(""), &imessagev1.UploadAttachmentRequest{FileName: "big.dat", Data: make([]byte, 1001)}, grpc.Trailer(&md))
	if status.Code(err) != codes.InvalidArgument || trailer1(md, "error-code") != "invalidArgument" || trailer1(md, "error-context-field") != "data" {
		t.Fatalf("upload past the cap: %v %v", err, md)
	}
	if n := blobRows(t, srv); n != 0 {
		t.Fatalf("a refused upload left %d chunks", n)
	}

	data := []byte("%PDF-1.4 a small document")
	up, err := files.UploadAttachment(c.ctx(""), &imessagev1.UploadAttachmentRequest{FileName: "dir/\x00report\u202e.pdf", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	info := up.GetAttachment()
	if info.GetFileName() != "report.pdf" || info.GetMimeType() != "application/pdf" || info.GetTotalBytes() != int64(len(data)) {
		t.Fatalf("upload answered %v", info)
	}

	send := func(cl *apiClient, key, guid string) <-chan callResult {
		return startCall(func(o ...grpc.CallOption) (*imessagev1.MessageResponse, error) {
			return cl.msgs.SendAttachmentMessage(cl.ctx(key), &imessagev1.SendAttachmentMessageRequest{ChatGuid: dmGUID, Attachment: attachmentRef(guid)}, o...)
		})
	}
	call := send(c, "k1", info.GetGuid())
	cmd := a.nextCommand()
	sa := cmd.GetSendAttachment()
	if sa.GetBlob() == nil || sa.GetBlob().GetSize() != uint64(len(data)) || sa.GetFileName() != "report.pdf" || sa.GetMimeType() != "application/pdf" || cmd.GetChatGuid() != dmGUID {
		t.Fatalf("command %v", cmd)
	}
	got, err := a.fetchBlob(cmd.GetId(), sa.GetBlob().GetId())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("FetchBlob of the upload: %q %v", got, err)
	}
	if n := blobRows(t, srv); n != 1 {
		t.Errorf("%d chunks stored; the send should reference the upload's one, not copy it", n)
	}
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: "MSG-1", ChatGuid: "iMessage;-;" + peer, Sent: true, Date: when})
	r := awaitCall(t, call)
	m := r.resp.(*imessagev1.MessageResponse).GetMessage()
	if r.err != nil || m.GetGuid() != "MSG-1" || len(m.GetContent().GetAttachments()) != 1 || m.GetContent().GetAttachments()[0].GetGuid() != info.GetGuid() {
		t.Fatalf("send: %v %v", r.resp, r.err)
	}
	// The same key is the same command: answered again, not sent again.
	if r := awaitCall(t, send(c, "k1", info.GetGuid())); r.err != nil || r.resp.(*imessagev1.MessageResponse).GetMessage().GetGuid() != "MSG-1" {
		t.Fatalf("repeat: %v %v", r.resp, r.err)
	}
	a.noCommand(200 * time.Millisecond)

	notFound := func(what string, r callResult) {
		t.Helper()
		if status.Code(r.err) != codes.NotFound || trailer1(r.trailer, "error-code") != "attachmentNotFound" || trailer1(r.trailer, "x-retryable") != "false" {
			t.Fatalf("%s: %v %v", what, r.err, r.trailer)
		}
	}
	notFound("another token's upload", awaitCall(t, send(o, "k2", info.GetGuid())))
	notFound("an unknown upload", awaitCall(t, send(c, "k3", "upload-NOSUCH")))

	// An upload nobody sent expires after its time to live and is pruned;
	// the one a send used is kept while that command could still fetch it.
	unused, err := files.UploadAttachment(c.ctx(""), &imessagev1.UploadAttachmentRequest{FileName: "a.txt", Data: []byte("soon gone")})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Minute)
	notFound("an expired upload", awaitCall(t, send(c, "k4", unused.GetAttachment().GetGuid())))
	eventually(t, "the expired upload is pruned", func() bool { return blobRows(t, srv) == 1 })
	if d := downloadAll(t, files, c.ctx(""), info.GetGuid()); d.err != nil || !bytes.Equal(d.data, data) {
		t.Fatalf("the sent upload is still served: %v", d.err)
	}
	clock.Advance(5 * time.Minute)
	eventually(t, "every upload is pruned", func() bool { return blobRows(t, srv) == 0 })
}

type downloaded struct {
	head   *imessagev1.AttachmentInfo
	data   []byte
	chunks int
	err    error
	md     metadata.MD
}

func downloadAll(t *testing.T, files imessagev1.AttachmentServiceClient, ctx context.Context, guid string) downloaded {
	t.Helper()
	st, err := files.DownloadAttachment(ctx, &imessagev1.DownloadAttachmentRequest{AttachmentGuid: guid})
	if err != nil {
		return downloaded{err: err}
	}
	var d downloaded
	for {
		f, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.err = err
			break
		}
		if h := f.GetHeader(); h != nil {
			d.head = h.GetAttachment()
			continue
		}
		d.data = append(d.data, f.GetPrimaryChunk()...)
		d.chunks++
	}
	d.md = st.Trailer()
	return d
}

// putFile answers a fetch_attachment as an agent does: the header, the
// bytes in chunks, then the result.
func (a *testAgent) putFile(cmd *linev1.Command, data []byte, chunk int) error {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.token)
	st, err := a.client.PutAttachment(ctx)
	if err != nil {
		return err
	}
	head := &linev1.AttachmentHeader{CommandId: cmd.GetId(), Attachment: &linev1.Attachment{
		Guid: cmd.GetFetchAttachment().GetAttachmentGuid(), FileName: "a.png", MimeType: "image/png", Size: uint64(len(data)), TransferState: 5}}
	if err := st.Send(&linev1.AttachmentPart{Part: &linev1.AttachmentPart_Header{Header: head}}); err != nil {
		return err
	}
	for off := 0; off < len(data); off += chunk {
		if err := st.Send(&linev1.AttachmentPart{Part: &linev1.AttachmentPart_Chunk{Chunk: data[off:min(off+chunk, len(data))]}}); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	_, err = st.CloseAndRecv()
	return err
}

// A download is one fetch_attachment command; the agent's PutAttachment
// bytes reach the caller as they come, and the agent's failures reach it
// typed. PutAttachment serves only the agent the command went to.
func TestDownloadThroughTheAgent(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, apiLine)
	a.connect()
	intruder := enrollAgent(t, srv, "+15550000002")
	intruder.connect()
	tok, _, _ := srv.CreateAPIToken(context.Background(), []string{apiLine}, false)
	c := newAPIClient(t, srv, tok)
	files := imessagev1.NewAttachmentServiceClient(dial(t, srv))

	data := bytes.Repeat([]byte("0123456789abcdef"), 5000)
	got := make(chan downloaded, 1)
	go func() { got <- downloadAll(t, files, c.ctx(""), "AT-1") }()
	cmd := a.nextCommand()
	if cmd.GetFetchAttachment().GetAttachmentGuid() != "AT-1" || cmd.GetLine() != apiLine {
		t.Fatalf("command %v", cmd)
	}
	if err := intruder.putFile(cmd, data, 1000); status.Code(err) != codes.NotFound {
		t.Fatalf("another agent's PutAttachment: %v, want NOT_FOUND", err)
	}
	if err := a.putFile(cmd, data, 30000); err != nil {
		t.Fatal(err)
	}
	a.apiSucceed(cmd.GetId(), &linev1.Snapshot{MessageGuid: "MSG-9"})
	d := <-got
	if d.err != nil || !bytes.Equal(d.data, data) || d.chunks != 3 || d.head.GetGuid() != "AT-1" || d.head.GetMimeType() != "image/png" {
		t.Fatalf("download: %v, %d bytes in %d chunks, header %v", d.err, len(d.data), d.chunks, d.head)
	}

	for _, tc := range []struct {
		code               linev1.ErrorCode
		status             codes.Code
		sdk, retry, prefix string
	}{
		{linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, codes.Unavailable, "serviceUnavailable", "true", "still receiving"},
		{linev1.ErrorCode_ERROR_CODE_NOT_FOUND, codes.NotFound, "attachmentNotFound", "false", "no attachment"},
		{linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, codes.InvalidArgument, "invalidArgument", "false", "outside"},
	} {
		go func() { got <- downloadAll(t, files, c.ctx(""), "AT-2") }()
		cmd := a.nextCommand()
		a.apiFail(cmd.GetId(), &linev1.CommandError{Code: tc.code, Message: tc.prefix + " AT-2"})
		d := <-got
		if status.Code(d.err) != tc.status || trailer1(d.md, "error-code") != tc.sdk || trailer1(d.md, "x-retryable") != tc.retry || d.head != nil {
			t.Errorf("%v: %v %v", tc.code, d.err, d.md)
		}
		// Nobody waits any more: the agent's late file is refused.
		if err := a.putFile(cmd, data, 1000); status.Code(err) != codes.NotFound && status.Code(err) != codes.FailedPrecondition {
			t.Errorf("a PutAttachment after the download ended: %v", err)
		}
	}
}
