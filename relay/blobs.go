package relay

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Large file data never rides in a stream frame: one frame over the agent's
// receive limit would fail the whole stream, and the relay would redeliver
// it on every reconnect (a poison pill that stalls every other command of
// the agent). Data above inlineDataMax is cut into chunks kept with the
// command; the command carries a BlobRef, and the agent streams the chunks
// with FetchBlob into its own spool when it runs the command. The chunks go
// when the command reaches a final state. A platform API upload is a blob
// too (api_attachments_store.go), kept until it expires; a send that uses
// it carries a BlobRef to it rather than a copy.

// pendingBlob is file data taken out of a command, to store with it.
type pendingBlob struct {
	id     string
	chunks [][]byte
	total  int
}

func (b *pendingBlob) size() int {
	if b == nil {
		return 0
	}
	return b.total
}

// extractBlob moves large inline data out of cmd into a blob and leaves a
// BlobRef in its place; nil when the data is small enough to stay inline.
func extractBlob(cmd *linev1.Command) *pendingBlob {
	var data []byte
	var set func(*linev1.BlobRef)
	switch {
	case len(cmd.GetSendAttachment().GetData()) > inlineDataMax:
		a := cmd.GetSendAttachment()
		data, set = a.GetData(), func(r *linev1.BlobRef) { a.Source = &linev1.SendAttachment_Blob{Blob: r} }
	case len(cmd.GetSetBackground().GetData()) > inlineDataMax:
		bg := cmd.GetSetBackground()
		data, set = bg.GetData(), func(r *linev1.BlobRef) { bg.Source = &linev1.SetBackground_Blob{Blob: r} }
	default:
		return nil
	}
	b, ref := newPendingBlob(data)
	set(ref)
	return b
}

// newPendingBlob cuts data into a new blob's chunks and returns the
// reference to it.
func newPendingBlob(data []byte) (*pendingBlob, *linev1.BlobRef) {
	sum := sha256.Sum256(data)
	b := &pendingBlob{id: newSecret("blob_"), total: len(data)}
	for off := 0; off < len(data); off += blobChunkBytes {
		b.chunks = append(b.chunks, data[off:min(off+blobChunkBytes, len(data))])
	}
	return b, &linev1.BlobRef{Id: b.id, Size: uint64(len(data)), Sha256: hex.EncodeToString(sum[:])}
}

// commandBlob is the BlobRef a command carries, nil for none.
func commandBlob(cmd *linev1.Command) *linev1.BlobRef {
	if r := cmd.GetSendAttachment().GetBlob(); r != nil {
		return r
	}
	return cmd.GetSetBackground().GetBlob()
}

// blobKinds are the kinds whose commands may name a blob (commandBlob):
// only their chunks need deleting when they finish, and most commands are
// of other kinds, which skip that delete (a round trip on PostgreSQL).
var blobKinds = map[string]bool{
	command.KindName(&linev1.Command{Kind: &linev1.Command_SendAttachment{}}): true,
	command.KindName(&linev1.Command{Kind: &linev1.Command_SetBackground{}}):  true,
}

// insertBlob stores b's chunks for commandID inside tx.
func insertBlob(ctx context.Context, tx *sql.Tx, commandID string, b *pendingBlob) error {
	for i, c := range b.chunks {
		if _, err := tx.ExecContext(ctx, `INSERT INTO blob_chunks(blob_id, command_id, idx, data) VALUES(?, ?, ?, ?)`, b.id, commandID, i, c); err != nil {
			return err
		}
	}
	return nil
}

// deleteBlobs drops a finished command's chunks inside tx.
func (st *store) deleteBlobs(ctx context.Context, tx *sql.Tx, commandID string) error {
	_, err := st.txExec(ctx, tx, sqlDeleteBlobs, commandID)
	return err
}

// fetchBlob serves FetchBlob: only to the agent the command was dispatched
// to, only while the command is unfinished, only the blob the command
// itself names (its own, or the upload it sends), one chunk read at a
// time.
func (s *Server) fetchBlob(req *linev1.FetchBlobRequest, stream linev1.LineRelay_FetchBlobServer) error {
	ctx := stream.Context()
	agentID, err := s.authenticate(ctx)
	if err != nil {
		return err
	}
	notFound := status.Error(codes.NotFound, "no such blob for a command dispatched to this agent")
	r, err := s.store.command(ctx, req.GetCommandId())
	if err != nil {
		s.log.Error("fetch blob: read command", "err", err)
		return status.Error(codes.Internal, "the relay could not read the command")
	}
	if r == nil || r.agentID != agentID || !unfinished(r.state) {
		return notFound
	}
	cmd := &linev1.Command{}
	if err := proto.Unmarshal(r.command, cmd); err != nil || commandBlob(cmd) == nil || commandBlob(cmd).GetId() != req.GetBlobId() {
		return notFound
	}
	for i := 0; ; i++ {
		var chunk []byte
		err := s.store.db.QueryRowContext(ctx, `SELECT data FROM blob_chunks WHERE blob_id = ? AND idx = ?`,
			req.GetBlobId(), i).Scan(&chunk)
		if errors.Is(err, sql.ErrNoRows) {
			if i == 0 {
				return notFound
			}
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			s.log.Error("fetch blob: read chunk", "command_id", req.GetCommandId(), "err", err)
			return status.Error(codes.Internal, "the relay could not read the blob")
		}
		if err := stream.Send(&linev1.BlobChunk{Data: chunk}); err != nil {
			return err
		}
	}
}

func unfinished(state string) bool {
	return state == stateDispatched || state == stateAccepted || state == stateInProgress
}
