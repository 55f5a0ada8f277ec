package sim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// attachmentsPrefix is how Messages spells its attachments folder in
// attachment.filename.
const attachmentsPrefix = "~/Library/Messages/Attachments/"

// transferFinished is attachment.transfer_state of a whole file.
const transferFinished = 5

// AttachmentsDir is the simulated ~/Library/Messages/Attachments: the
// folder beside chat.db where the files of attachment rows are written
// (the rows still say "~/Library/Messages/Attachments/...", as on a Mac).
func (s *Store) AttachmentsDir() string {
	return filepath.Join(filepath.Dir(s.path), "Attachments")
}

// writeAttachment writes data at rel inside the attachments folder, private
// to the user as Messages keeps it. rel comes from the row's own layout; a
// name that would leave the folder is refused.
func (t *wtx) writeAttachment(rel string, data []byte) error {
	p := filepath.Join(t.attachments, filepath.FromSlash(rel))
	if !strings.HasPrefix(p, t.attachments+string(filepath.Separator)) {
		return fmt.Errorf("sim: attachment name %q leaves the attachments folder", rel)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("sim: attachment folder: %w", err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		return fmt.Errorf("sim: write attachment: %w", err)
	}
	return nil
}

// FinishTransfer completes an incoming attachment that arrived still
// transferring: the whole file replaces the part received, then, in one
// commit, the row becomes finished (transfer_state 5) with its size, as
// Messages updates it when the download ends. A reader never sees the row
// finished before the file is whole.
func (s *Store) FinishTransfer(ctx context.Context, guid string, data []byte) error {
	return s.tx(ctx, func(tx *wtx) error {
		var filename string
		if err := tx.QueryRowContext(ctx, `SELECT filename FROM attachment WHERE guid = ?`, guid).Scan(&filename); err != nil {
			return fmt.Errorf("sim: attachment %s: %w", guid, err)
		}
		rel, ok := strings.CutPrefix(filename, attachmentsPrefix)
		if !ok {
			return fmt.Errorf("sim: attachment %s is not in the attachments folder", guid)
		}
		if err := tx.writeAttachment(rel, data); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE attachment SET transfer_state = ?, total_bytes = ? WHERE guid = ?`, transferFinished, len(data), guid); err != nil {
			return fmt.Errorf("sim: finish transfer: %w", err)
		}
		return nil
	})
}
