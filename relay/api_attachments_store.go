package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Files uploaded through the platform API (UploadAttachment) wait in
// relay.db for the SendAttachmentMessage that uses them: a row in uploads
// naming the token that made it and when it expires, and the bytes as
// blob_chunks under command_id "upload:<guid>", the same chunks a command's
// own blob has. A send claims the upload for as long as its command may
// still fetch it, so pruning never takes a file from under a command.

// uploadPruneBatch bounds the uploads one sweeper turn deletes.
const uploadPruneBatch = 100

// upload is one stored upload.
type upload struct {
	guid, tokenID, blobID string
	fileName, mimeType    string
	sha256                string
	size                  int
	created, expires      time.Time
}

// uploadOwner is the blob_chunks.command_id of an upload's chunks.
func uploadOwner(guid string) string { return "upload:" + guid }

// insertUpload stores u and its bytes, b, in one commit: both or neither.
func (st *store) insertUpload(ctx context.Context, u *upload, b *pendingBlob) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO uploads(guid, token_id, blob_id, file_name, mime_type, size, sha256, created_at, expires_at)
			VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)`, u.guid, u.tokenID, u.blobID, u.fileName, u.mimeType, u.size, u.sha256,
			u.created.UnixNano(), u.expires.UnixNano()); err != nil {
			return err
		}
		return insertBlob(ctx, tx, uploadOwner(u.guid), b)
	})
}

// claimUpload returns tokenID's unexpired upload guid, kept at least until
// keep; nil when there is none (unknown, expired, or another token's).
func (st *store) claimUpload(ctx context.Context, guid, tokenID string, now, keep time.Time) (*upload, error) {
	n, err := st.exec(ctx, `UPDATE uploads SET expires_at = `+st.d.greatest+`(expires_at, ?) WHERE guid = ? AND token_id = ? AND expires_at > ?`,
		keep.UnixNano(), guid, tokenID, now.UnixNano())
	if err != nil || n == 0 {
		return nil, err
	}
	return st.upload(ctx, guid, tokenID, now)
}

// upload returns tokenID's unexpired upload guid, or nil.
func (st *store) upload(ctx context.Context, guid, tokenID string, now time.Time) (*upload, error) {
	u := &upload{}
	var cr, ex int64
	err := st.db.QueryRowContext(ctx, `SELECT guid, token_id, blob_id, file_name, mime_type, size, sha256, created_at, expires_at
		FROM uploads WHERE guid = ? AND token_id = ? AND expires_at > ?`, guid, tokenID, now.UnixNano()).Scan(
		&u.guid, &u.tokenID, &u.blobID, &u.fileName, &u.mimeType, &u.size, &u.sha256, &cr, &ex)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("relay: read upload: %w", err)
	}
	u.created, u.expires = time.Unix(0, cr), time.Unix(0, ex)
	return u, nil
}

// uploadChunk is chunk i of an upload's bytes; ok is false past the last.
func (st *store) uploadChunk(ctx context.Context, u *upload, i int) (chunk []byte, ok bool, err error) {
	err = st.db.QueryRowContext(ctx, `SELECT data FROM blob_chunks WHERE blob_id = ? AND command_id = ? AND idx = ?`,
		u.blobID, uploadOwner(u.guid), i).Scan(&chunk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	return chunk, err == nil, err
}

// pruneUploads deletes up to limit uploads expired at now, with their
// bytes, and returns how many went. On PostgreSQL the uploads it deletes
// are locked first and one a send is claiming is skipped: a claim never
// extends an upload this deletes.
func (st *store) pruneUploads(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int
	err := st.tx(ctx, func(tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT guid FROM uploads WHERE expires_at <= ? ORDER BY expires_at LIMIT ?`+st.d.skipLocked, now.UnixNano(), limit)
		if err != nil {
			return err
		}
		guids, err := collect(rows, scanOne[string])
		if err != nil {
			return err
		}
		for _, g := range guids {
			if _, err := tx.ExecContext(ctx, `DELETE FROM blob_chunks WHERE command_id = ?`, uploadOwner(g)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE guid = ?`, g); err != nil {
				return err
			}
		}
		n = len(guids)
		return nil
	})
	return n, err
}
