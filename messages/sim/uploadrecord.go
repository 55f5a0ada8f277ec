package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// uploadsDirName is the folder, next to chat.db, where the simulated
// Messages records its background uploads in flight: one JSON file per
// upload, named after the asset id.
const uploadsDirName = "uploads"

const uploadRecordVersion = 1

// uploadRecord is what the simulated Messages keeps on disk about an upload
// in flight. It holds no key material: the locator, key and signature are
// made only when the upload finishes.
type uploadRecord struct {
	Version int    `json:"version"`
	Chat    string `json:"chat_guid"`
	AssetID string `json:"asset_id"`
	// Channel and RowGUID are chosen at the start, so that finishing the
	// upload twice (a crash between writing the evidence and removing the
	// record) writes the same properties and the same row, once.
	Channel string     `json:"channel_guid"`
	RowGUID string     `json:"row_guid"`
	Started time.Time  `json:"started"`
	Size    int64      `json:"size"`
	Plan    planRecord `json:"plan"`
}

type planRecord struct {
	DurationNS int64   `json:"duration_ns"`
	Steps      int     `json:"steps,omitempty"`
	Stall      bool    `json:"stall,omitempty"`
	Fail       string  `json:"fail,omitempty"`
	LoseAt     float64 `json:"lose_at,omitempty"`
}

func recordPlan(p UploadPlan) planRecord {
	return planRecord{DurationNS: int64(p.Duration), Steps: p.Steps, Stall: p.Stall, Fail: p.Fail, LoseAt: p.LoseAt}
}

func (p planRecord) plan() UploadPlan {
	return UploadPlan{Duration: time.Duration(p.DurationNS), Steps: p.Steps, Stall: p.Stall, Fail: p.Fail, LoseAt: p.LoseAt}
}

// running holds the record paths of the uploads running in this process, so
// that ResumeUploads never runs an upload twice.
var running = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

func claimUpload(path string) bool {
	running.Lock()
	defer running.Unlock()
	if running.m[path] {
		return false
	}
	running.m[path] = true
	return true
}

func releaseUpload(path string) {
	running.Lock()
	delete(running.m, path)
	running.Unlock()
}

func (s *Store) uploadsDir() string {
	dir, err := filepath.Abs(filepath.Dir(s.path))
	if err != nil {
		dir = filepath.Dir(s.path)
	}
	return filepath.Join(dir, uploadsDirName)
}

func (s *Store) uploadPath(assetID string) string {
	return filepath.Join(s.uploadsDir(), assetID+".json")
}

// writeRecord stores rec at path atomically: a synced temporary file renamed
// into place, then the folder synced.
func writeRecord(path string, rec uploadRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("sim: record upload: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sim: record upload: %w", err)
	}
	f, err := os.CreateTemp(dir, ".upload-*.tmp")
	if err != nil {
		return fmt.Errorf("sim: record upload: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sim: record upload: %w", err)
	}
	syncDir(dir)
	return nil
}

// removeRecord forgets a finished upload. It is best effort: finishing an
// upload again writes nothing new (see finishUpload).
func removeRecord(path string) {
	if err := os.Remove(path); err == nil {
		syncDir(filepath.Dir(path))
	}
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// ResumeUploads carries on the background uploads recorded in the Store's
// folder that no upload in this process is running: those a process
// (the agent, with the simulated Messages inside it) left behind when it
// ended mid-upload, as Messages on a Mac keeps uploading while the agent is
// down. Each continues on its original schedule and writes its evidence at
// its original start plus Duration, or at once if that has passed; a record
// of an upload whose evidence was already written before the process ended
// is only removed, so the evidence is written exactly once. The uploads run
// on their own (Stop ends them, keeping their records); their progress goes
// nowhere. An unreadable record is reported in the error and left alone;
// the others are still resumed.
func (s *Store) ResumeUploads(ctx context.Context) ([]*Upload, error) {
	dir := s.uploadsDir()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sim: resume uploads: %w", err)
	}
	var ups []*Upload
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".upload-") && strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name)) // a record never renamed into place
			continue
		}
		if e.IsDir() || !strings.HasSuffix(name, ".json") {
			continue
		}
		if err := ctx.Err(); err != nil {
			return ups, err
		}
		path := filepath.Join(dir, name)
		rec, err := readRecord(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !claimUpload(path) {
			continue // running in this process already
		}
		ups = append(ups, s.goUpload(path, rec, nil))
	}
	return ups, errors.Join(errs...)
}

func readRecord(path string) (uploadRecord, error) {
	var rec uploadRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, fmt.Errorf("sim: upload record: %w", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("sim: upload record %s: %w", filepath.Base(path), err)
	}
	if rec.Version != uploadRecordVersion || rec.Chat == "" || rec.AssetID == "" || rec.RowGUID == "" ||
		rec.Size <= 0 || filepath.Base(path) != rec.AssetID+".json" {
		return rec, fmt.Errorf("sim: upload record %s is not one this version wrote", filepath.Base(path))
	}
	return rec, nil
}

// finishUpload writes rec's evidence as Messages does once the asset is
// uploaded: first the chat's properties gain the new asset (a fresh
// locator, key and signature), then, in its own commit, the item_type 3 /
// group_action_type 4 row. Each step is skipped when it was already done,
// so finishing twice writes the evidence once.
func (s *Store) finishUpload(ctx context.Context, rec uploadRecord) error {
	if err := s.editProperties(ctx, rec.Chat, func(p map[string]any) {
		if bp, ok := p["backgroundProperties"].(map[string]any); ok && bp["trabaid"] == rec.AssetID {
			return // written before the process ended
		}
		channel := rec.Channel
		if channel == "" {
			channel = s.newGUID()
		}
		p["backgroundChannelGUID"] = channel
		p["backgroundProperties"] = map[string]any{
			"trabaid": rec.AssetID,
			"trabar":  "https://cvws.icloud-content.com/B/" + s.newGUID(),
			"trabak":  s.randomBytes(32),
			"trabas":  s.randomBytes(21),
			"trabafs": rec.Size,
			"trabav":  int64(1),
		}
	}); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *wtx) error {
		var setRow, other int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE item_type = 3 AND group_action_type = 4), count(*) FROM message WHERE guid = ?`,
			rec.RowGUID).Scan(&setRow, &other); err != nil {
			return err
		}
		if setRow > 0 {
			return nil // written before the process ended
		}
		m := Msg{Chat: rec.Chat, GUID: rec.RowGUID, FromMe: true, Sent: true,
			Group: &GroupAction{ItemType: ItemChatAction, ActionType: ActionBackgroundSet}}
		if other > 0 {
			m.GUID = "" // another row took the guid: use a new one
		}
		_, err := s.insertTx(ctx, tx, m, map[string]Chat{})
		return err
	})
}
