package sim

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"time"
)

// The fault hooks below reproduce what a real Mac does to chat.db's files,
// so that the reader and watcher can be tested against it.

// CheckpointMode names a SQLite WAL checkpoint mode.
type CheckpointMode string

// Checkpoint modes, as PRAGMA wal_checkpoint takes them.
const (
	CheckpointPassive  CheckpointMode = "PASSIVE"
	CheckpointFull     CheckpointMode = "FULL"
	CheckpointRestart  CheckpointMode = "RESTART"
	CheckpointTruncate CheckpointMode = "TRUNCATE"
)

// Checkpoint copies the WAL into chat.db, as Messages' SQLite does on its own
// from time to time; TRUNCATE also empties chat.db-wal.
func (s *Store) Checkpoint(ctx context.Context, mode CheckpointMode) error {
	switch mode {
	case CheckpointPassive, CheckpointFull, CheckpointRestart, CheckpointTruncate:
	default:
		return fmt.Errorf("sim: unknown checkpoint mode %q", mode)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	var busy, logFrames, done int
	if err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(`+string(mode)+`)`).Scan(&busy, &logFrames, &done); err != nil {
		return fmt.Errorf("sim: checkpoint: %w", err)
	}
	return nil
}

// RecreateWAL does what Messages does when it restarts: checkpoint and
// truncate the WAL, close, delete chat.db-wal and start a new one, which has
// a new inode. A watcher holding the old file goes deaf; a reader holding the
// old file descriptor must reopen.
func (s *Store) RecreateWAL(ctx context.Context) error {
	if err := s.Checkpoint(ctx, CheckpointTruncate); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("sim: close for WAL re-creation: %w", err)
	}
	wal := s.path + "-wal"
	if err := os.Remove(wal); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sim: remove WAL: %w", err)
	}
	f, err := os.OpenFile(wal, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("sim: re-create WAL: %w", err)
	}
	f.Close()
	return s.open()
}

// InsertHistorical writes rows as iCloud sync delivers them: old dates (each
// Msg.Date should be in the past) but new, higher ROWIDs, all in one
// transaction. Rows without a Date get one age before now.
func (s *Store) InsertHistorical(ctx context.Context, age time.Duration, msgs []Msg) ([]Row, error) {
	base := s.opts.clock().Add(-age)
	cp := make([]Msg, len(msgs))
	copy(cp, msgs)
	for i := range cp {
		if cp[i].Date.IsZero() {
			cp[i].Date = base.Add(time.Duration(i) * time.Second)
		}
		if cp[i].FromMe {
			cp[i].Sent, cp[i].Delivered = true, true
		}
	}
	return s.InsertBatch(ctx, cp)
}

// ReplaceDatabase swaps chat.db wholesale, as a restore from backup or a
// migration does: build writes a new database at a temporary path (it gets an
// empty chat.db with the schema, already holding the current chats and
// handles if keepChats), which then is renamed over chat.db; the old WAL and
// shared-memory files are removed and the Store continues on the new file.
// build may be nil.
func (s *Store) ReplaceDatabase(ctx context.Context, keepChats bool, build func(ctx context.Context, st *Store) error) error {
	if err := s.Checkpoint(ctx, CheckpointTruncate); err != nil {
		return err
	}
	tmp := s.path + ".replace"
	for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		os.Remove(p)
	}
	s.mu.Lock()
	seed := s.rnd.Uint64()
	s.mu.Unlock()
	ns, err := Create(tmp, WithClock(s.opts.clock), WithSeed(seed), WithLine(s.opts.line), WithText(s.opts.fillText))
	if err != nil {
		return err
	}
	if keepChats {
		if err := copyChats(ctx, s, ns); err != nil {
			ns.Close()
			return err
		}
	}
	if build != nil {
		if err := build(ctx, ns); err != nil {
			ns.Close()
			return err
		}
	}
	if err := ns.Checkpoint(ctx, CheckpointTruncate); err != nil {
		ns.Close()
		return err
	}
	if err := ns.Close(); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("sim: close for replacement: %w", err)
	}
	// The old sidecars belong to the old file: a new writer must not adopt
	// them, so they go before the rename makes the new file visible.
	for _, p := range []string{s.path + "-wal", s.path + "-shm", tmp + "-wal", tmp + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sim: remove %s: %w", p, err)
		}
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("sim: rename new database: %w", err)
	}
	return s.open()
}

// copyChats copies chats, handles and their joins from src to dst, so that
// a replaced database still knows the conversations.
func copyChats(ctx context.Context, src, dst *Store) error {
	type chatRow struct {
		guid, service string
		style         int
		name          sql.NullString
		members       []string
	}
	var chats []chatRow
	err := src.tx(ctx, func(tx *wtx) error {
		rows, err := tx.QueryContext(ctx, `SELECT guid FROM chat ORDER BY ROWID`)
		if err != nil {
			return err
		}
		var guids []string
		for rows.Next() {
			var g string
			if err := rows.Scan(&g); err != nil {
				rows.Close()
				return err
			}
			guids = append(guids, g)
		}
		rows.Close()
		for _, g := range guids {
			c, err := loadChat(ctx, tx, g)
			if err != nil {
				return err
			}
			chats = append(chats, chatRow{guid: c.GUID, service: c.Service, style: c.Style, name: sql.NullString{String: c.DisplayName, Valid: c.DisplayName != ""}, members: c.Participants})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range chats {
		if len(c.members) == 0 {
			continue
		}
		if _, err := dst.EnsureChat(ctx, ChatSpec{GUID: c.guid, Service: c.service, Participants: c.members, Group: c.style == StyleGroup, DisplayName: c.name.String}); err != nil {
			return err
		}
	}
	return nil
}
