package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// blobFetcher turns a command's BlobRef (file data the relay kept out of
// the stream, see relay/blobs.go) back into bytes just before the command
// runs, over FetchBlob on the relay connection. One fetch runs at a time,
// so a burst of large attachments costs one payload of memory, not one per
// chat; a payload that cannot be fetched fails its own command only.
type blobFetcher struct {
	client linev1.LineRelayClient
	tokens *tokenSource
	sem    chan struct{}
}

func newBlobFetcher(client linev1.LineRelayClient, tokens *tokenSource) *blobFetcher {
	return &blobFetcher{client: client, tokens: tokens, sem: make(chan struct{}, 1)}
}

// resolve returns cmd unchanged when it carries no BlobRef, else a copy
// with the fetched bytes inline.
func (b *blobFetcher) resolve(ctx context.Context, cmd *linev1.Command) (*linev1.Command, error) {
	ref, limit := blobOf(cmd)
	if ref == nil {
		return cmd, nil
	}
	if ref.GetSize() > uint64(limit) {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the file is %d bytes; at most %d are accepted", ref.GetSize(), limit)
	}
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-b.sem }()
	data, err := b.fetch(ctx, cmd.GetId(), ref)
	if err != nil {
		return nil, err
	}
	out := proto.Clone(cmd).(*linev1.Command)
	switch {
	case out.GetSendAttachment() != nil:
		out.GetSendAttachment().Source = &linev1.SendAttachment_Data{Data: data}
	case out.GetSetBackground() != nil:
		out.GetSetBackground().Source = &linev1.SetBackground_Data{Data: data}
	}
	return out, nil
}

// blobOf returns the command's BlobRef and the cap of its kind.
func blobOf(cmd *linev1.Command) (*linev1.BlobRef, int) {
	if r := cmd.GetSendAttachment().GetBlob(); r != nil {
		return r, command.MaxAttachmentBytes
	}
	if r := cmd.GetSetBackground().GetBlob(); r != nil {
		return r, command.MaxBackgroundBytes
	}
	return nil, 0
}

func (b *blobFetcher) fetch(ctx context.Context, commandID string, ref *linev1.BlobRef) ([]byte, error) {
	unavailable := func(why string, err error) error {
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "could not fetch the file from the relay: %s: %w", why, err)
	}
	var last error
	for attempt := range blobAttempts {
		if attempt > 0 {
			// A passing fault is often the session dropping every TCP
			// connection to the relay (its watchdog fired: transport.go):
			// give the connection a moment, and wait for it below.
			t := time.NewTimer(time.Duration(attempt) * blobRetryPause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		tok, err := b.tokens.token(ctx, attempt > 0 && status.Code(last) == codes.Unauthenticated)
		if err != nil {
			return nil, unavailable("no access token", err)
		}
		data, err := b.fetchOnce(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), commandID, ref)
		if err == nil {
			return data, nil
		}
		var me *command.Error
		if errors.As(err, &me) || ctx.Err() != nil {
			return nil, err
		}
		last = err
		switch status.Code(err) {
		case codes.Unavailable, codes.Unauthenticated, codes.Aborted, codes.ResourceExhausted:
			continue // a passing fault: try again
		case codes.NotFound:
			return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_NOT_FOUND, "the relay no longer holds this command's file (it finished or expired)")
		}
		return nil, unavailable("relay error", err)
	}
	return nil, unavailable("relay unreachable", last)
}

// blobAttempts and blobRetryPause bound fetch's retries of a passing
// fault: the pause grows by blobRetryPause each time (0.5 s, 1 s, 1.5 s,
// 2 s), within the command's own deadline.
const (
	blobAttempts   = 5
	blobRetryPause = 500 * time.Millisecond
)

func (b *blobFetcher) fetchOnce(ctx context.Context, commandID string, ref *linev1.BlobRef) ([]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// WaitForReady: a connection being dialled again (after a drop) is
	// waited for, within ctx, rather than failing the attempt at once.
	st, err := b.client.FetchBlob(ctx, &linev1.FetchBlobRequest{CommandId: commandID, BlobId: ref.GetId()}, grpc.WaitForReady(true))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(int(ref.GetSize()))
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if uint64(buf.Len()+len(c.GetData())) > ref.GetSize() {
			return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the relay sent more than the %d bytes the command names", ref.GetSize())
		}
		buf.Write(c.GetData())
	}
	if uint64(buf.Len()) != ref.GetSize() {
		return nil, status.Errorf(codes.Unavailable, "got %d of %d bytes", buf.Len(), ref.GetSize())
	}
	sum := sha256.Sum256(buf.Bytes())
	if hex.EncodeToString(sum[:]) != ref.GetSha256() {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "the fetched file does not match the command's SHA-256")
	}
	return buf.Bytes(), nil
}
