package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/pkg/capool"
	imessagev1 "github.com/line-agent/line-agent/proto/photon/imessage/v1"
)

// platformClient is an SDK stand-in on the relay's platform API: the
// generated photon.imessage.v1 clients over TLS with a bearer token.
type platformClient struct {
	t     *testing.T
	msgs  imessagev1.MessageServiceClient
	files imessagev1.AttachmentServiceClient
	token string
}

func (h *e2e) platform() *platformClient {
	h.t.Helper()
	tok, _, err := h.relay.CreateAPIToken(context.Background(), []string{e2eLine}, false)
	if err != nil {
		h.t.Fatal(err)
	}
	pool, err := capool.Load(h.relay.CAFile())
	if err != nil {
		h.t.Fatal(err)
	}
	cc, err := grpc.NewClient("passthrough:///"+h.relay.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
	})), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(100<<20), grpc.MaxCallSendMsgSize(110<<20)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cc.Close() })
	return &platformClient{t: h.t, msgs: imessagev1.NewMessageServiceClient(cc), files: imessagev1.NewAttachmentServiceClient(cc), token: tok}
}

func (c *platformClient) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+c.token)
}

// download is one DownloadAttachment call: the header, each chunk, and how
// the stream ended with its trailer.
type download struct {
	header  *imessagev1.AttachmentInfo
	chunks  [][]byte
	err     error
	trailer metadata.MD
}

func (d download) bytes() []byte { return bytes.Join(d.chunks, nil) }

func (c *platformClient) download(guid string) download {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx(), 30*time.Second)
	defer cancel()
	st, err := c.files.DownloadAttachment(ctx, &imessagev1.DownloadAttachmentRequest{AttachmentGuid: guid})
	if err != nil {
		return download{err: err}
	}
	var d download
	for {
		f, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			d.err = err
			break
		}
		switch {
		case f.GetHeader() != nil:
			if d.header != nil || len(d.chunks) > 0 {
				c.t.Fatal("a second header, or a header after bytes")
			}
			d.header = f.GetHeader().GetAttachment()
		case d.header == nil:
			c.t.Fatal("bytes before the header")
		default:
			d.chunks = append(d.chunks, f.GetPrimaryChunk())
		}
	}
	d.trailer = st.Trailer()
	return d
}

func (d download) failed(t *testing.T, code codes.Code, sdk, retryable string) {
	t.Helper()
	if status.Code(d.err) != code || first(d.trailer, "error-code") != sdk || first(d.trailer, "x-retryable") != retryable {
		t.Fatalf("download: %v (error-code %q, x-retryable %q), want %v %s retryable=%s", d.err,
			first(d.trailer, "error-code"), first(d.trailer, "x-retryable"), code, sdk, retryable)
	}
	if d.header != nil || len(d.chunks) > 0 {
		t.Fatal("a failed download sent file data")
	}
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}

// pattern is n bytes that differ from chunk to chunk, so a reordered or
// repeated chunk shows.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

// UploadAttachment + SendAttachmentMessage end as a sent chat.db row whose
// attachment is the uploaded file, byte for byte, in Messages' folder.
func TestUploadThenSendEndsInChatDB(t *testing.T) {
	h := startE2E(t, simSetup{})
	c := h.platform()
	h.incoming("send me the photo") // the chat exists
	data := pattern(700 << 10)      // over the inline limit: the agent fetches the upload's blob
	up, err := c.files.UploadAttachment(c.ctx(), &imessagev1.UploadAttachmentRequest{FileName: "../../holiday photo.dat", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	info := up.GetAttachment()
	if info.GetGuid() == "" || info.GetFileName() != "holiday photo.dat" || info.GetTotalBytes() != int64(len(data)) {
		t.Fatalf("upload answered %v", info)
	}
	resp, err := c.msgs.SendAttachmentMessage(c.ctx(), &imessagev1.SendAttachmentMessageRequest{
		ChatGuid: "any;-;" + e2ePeer, Attachment: &imessagev1.AttachmentRef{Source: &imessagev1.AttachmentRef_AttachmentGuid{AttachmentGuid: info.GetGuid()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := resp.GetMessage()
	if m.GetGuid() == "" || m.GetDateCreated() == nil || m.GetContent() == nil || len(m.GetContent().GetAttachments()) != 1 ||
		m.GetContent().GetAttachments()[0].GetGuid() != info.GetGuid() {
		t.Fatalf("send answered %v", m)
	}
	if h.col(m.GetGuid(), "is_from_me") != "1" || h.col(m.GetGuid(), "is_sent") != "1" {
		t.Fatalf("row %s is not a sent row of ours", m.GetGuid())
	}
	var stored, name string
	var size int
	if err := h.db.QueryRow(`SELECT a.filename, a.transfer_name, a.total_bytes FROM attachment a JOIN message_attachment_join j ON j.attachment_id = a.ROWID
		JOIN message m ON m.ROWID = j.message_id WHERE m.guid = ?`, m.GetGuid()).Scan(&stored, &name, &size); err != nil {
		t.Fatal(err)
	}
	if size != len(data) {
		t.Errorf("attachment row: %s %q %d bytes, want %d", stored, name, size, len(data))
	}
	rel, ok := bytes.CutPrefix([]byte(stored), []byte("~/Library/Messages/Attachments/"))
	if !ok {
		t.Fatalf("attachment path %q", stored)
	}
	got, err := os.ReadFile(filepath.Join(h.m.Store.AttachmentsDir(), string(rel)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the file in Messages' folder is not the upload (%d bytes, %v)", len(got), err)
	}
	// The same upload reads back through DownloadAttachment.
	if d := c.download(info.GetGuid()); d.err != nil || !bytes.Equal(d.bytes(), data) {
		t.Fatalf("download of the upload: %v, %d bytes", d.err, len(d.bytes()))
	}
}

// inbound writes an incoming message with one attachment and returns its
// GUID.
func (h *e2e) inbound(a sim.Attachment) string {
	h.t.Helper()
	chat, err := h.m.Store.EnsureChat(context.Background(), sim.ChatSpec{Participants: []string{e2ePeer}})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.m.Store.Insert(context.Background(), sim.Msg{Chat: chat.GUID, Text: "for you", Attachments: []sim.Attachment{a}}); err != nil {
		h.t.Fatal(err)
	}
	return a.GUID
}

// Inbound attachments: a finished one comes back exactly, in several
// chunks; one still transferring is waited for and then served; one that
// does not finish within the agent's bound is UNAVAILABLE, retryable; an
// unknown GUID is NOT_FOUND.
func TestDownloadInboundAttachments(t *testing.T) {
	h := startE2E(t, simSetup{AttachmentWait: 1500 * time.Millisecond})
	c := h.platform()

	data := pattern(1300 << 10)
	h.inbound(sim.Attachment{GUID: "AT-DONE", Name: "scan.pdf", MIME: "application/pdf", UTI: "com.adobe.pdf", Data: data})
	d := c.download("AT-DONE")
	if d.err != nil {
		t.Fatalf("download: %v %v", d.err, d.trailer)
	}
	if !bytes.Equal(d.bytes(), data) || len(d.chunks) < 3 {
		t.Fatalf("got %d bytes in %d chunks, want exactly the %d bytes in several", len(d.bytes()), len(d.chunks), len(data))
	}
	hd := d.header
	if hd.GetGuid() != "AT-DONE" || hd.GetFileName() != "scan.pdf" || hd.GetMimeType() != "application/pdf" || hd.GetUti() != "com.adobe.pdf" ||
		hd.GetTotalBytes() != int64(len(data)) || hd.GetTransferState() != imessagev1.TransferState_TRANSFER_STATE_FINISHED || hd.GetIsOutgoing() {
		t.Errorf("header %v", hd)
	}

	// Still transferring: the download waits, and gets the whole file
	// once Messages has it, never the half written so far.
	late := pattern(600 << 10)
	h.inbound(sim.Attachment{GUID: "AT-LATE", Name: "clip.mov", Data: late, TransferState: 1})
	got := make(chan download, 1)
	start := time.Now()
	go func() { got <- c.download("AT-LATE") }()
	time.Sleep(400 * time.Millisecond)
	select {
	case d := <-got:
		t.Fatalf("the download returned while the file was still transferring: %v, %d bytes", d.err, len(d.bytes()))
	default:
	}
	if err := h.m.Store.FinishTransfer(context.Background(), "AT-LATE", late); err != nil {
		t.Fatal(err)
	}
	d = <-got
	if d.err != nil || !bytes.Equal(d.bytes(), late) {
		t.Fatalf("download after the transfer: %v, %d of %d bytes", d.err, len(d.bytes()), len(late))
	}
	if took := time.Since(start); took > 1400*time.Millisecond {
		t.Errorf("the download took %v: it should wake on the transfer's event, not poll", took)
	}

	// Never finishes within the agent's bound.
	h.inbound(sim.Attachment{GUID: "AT-STUCK", Name: "big.zip", Data: pattern(1 << 10), TransferState: 1})
	start = time.Now()
	c.download("AT-STUCK").failed(t, codes.Unavailable, "serviceUnavailable", "true")
	if took := time.Since(start); took < 1400*time.Millisecond {
		t.Errorf("answered after %v, before the agent's 1.5 s bound", took)
	}

	c.download("AT-NOPE").failed(t, codes.NotFound, "attachmentNotFound", "false")
}

// A row whose path leads out of Messages' attachments folder, by a
// symbolic link, by "..", or as an absolute path elsewhere, is refused and
// nothing of the file is sent.
func TestDownloadRefusesPathsOutsideTheAttachmentsFolder(t *testing.T) {
	h := startE2E(t, simSetup{})
	c := h.platform()
	secret := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(secret, []byte("not for the relay"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.m.Store.AttachmentsDir(), "ev", "il")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(secret), filepath.Join(dir, "dirlink")); err != nil {
		t.Fatal(err)
	}
	for guid, path := range map[string]string{
		"AT-LINK":     "~/Library/Messages/Attachments/ev/il/link.txt",
		"AT-DIRLINK":  "~/Library/Messages/Attachments/ev/il/dirlink/secret.txt",
		"AT-DOTDOT":   "~/Library/Messages/Attachments/../chat.db",
		"AT-ABSOLUTE": secret,
		"AT-FOLDER":   "~/Library/Messages/Attachments/ev",
	} {
		h.inbound(sim.Attachment{GUID: guid, Name: "x.txt", Filename: path})
		c.download(guid).failed(t, codes.InvalidArgument, "invalidArgument", "false")
	}
}
