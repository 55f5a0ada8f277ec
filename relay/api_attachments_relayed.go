package relay

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A download asked of one replica while the agent's stream, and so its
// PutAttachment, is on another (replicas behind one address) cannot meet
// in a pipe: the two calls are in different processes. The replica that
// gets the file then keeps it in the shared store, part by part as it
// arrives, and the agent's result, which comes only after its
// PutAttachment was answered, tells the asking replica to read it from
// there and stream it on. The copy is an uploads row no app can name (no
// token, a guid outside the upload prefix) with the parts as its
// blob_chunks: the reader deletes it once sent, and pruneUploads takes
// what nobody read once relayedTTL has passed.

// relayedTTL is how long a relayed download's copy is kept unread.
const relayedTTL = 15 * time.Minute

// relayedGUID is the uploads guid of the relayed copy of command id's
// file; its chunks are under uploadOwner of it, with id as their blob_id.
func relayedGUID(commandID string) string { return "download:" + commandID }

// relayedWriter stores one relayed download's parts, in order.
type relayedWriter struct {
	st *store
	id string
	n  int
}

// openRelayed makes the relayed copy of command id's file of size bytes;
// it fails if one exists (a second PutAttachment for the command).
func (st *store) openRelayed(ctx context.Context, id string, size uint64, now time.Time) (*relayedWriter, error) {
	err := st.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO uploads(guid, token_id, blob_id, file_name, mime_type, size, sha256, created_at, expires_at)
			VALUES(?, '', ?, '', '', ?, '', ?, ?)`, relayedGUID(id), id, int64(size), now.UnixNano(), now.Add(relayedTTL).UnixNano())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &relayedWriter{st: st, id: id}, nil
}

// put stores the next part.
func (w *relayedWriter) put(ctx context.Context, part *linev1.AttachmentPart) error {
	b, err := proto.Marshal(part)
	if err != nil {
		return err
	}
	idx := w.n
	err = w.st.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO blob_chunks(blob_id, command_id, idx, data) VALUES(?, ?, ?, ?)`,
			w.id, uploadOwner(relayedGUID(w.id)), idx, b)
		return err
	})
	if err == nil {
		w.n++
	}
	return err
}

// relayedPart is part i of command id's relayed copy; ok is false past
// the last, or when there is none.
func (st *store) relayedPart(ctx context.Context, id string, i int) (part *linev1.AttachmentPart, ok bool, err error) {
	var b []byte
	err = st.db.QueryRowContext(ctx, `SELECT data FROM blob_chunks WHERE blob_id = ? AND command_id = ? AND idx = ?`,
		id, uploadOwner(relayedGUID(id)), i).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	part = &linev1.AttachmentPart{}
	if err := proto.Unmarshal(b, part); err != nil {
		return nil, false, err
	}
	return part, true, nil
}

// dropRelayed deletes command id's relayed copy.
func (st *store) dropRelayed(ctx context.Context, id string) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM blob_chunks WHERE command_id = ?`, uploadOwner(relayedGUID(id))); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE guid = ?`, relayedGUID(id))
		return err
	})
}
