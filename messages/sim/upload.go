package sim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// UploadPlan scripts a simulated iCloud upload of a chat background.
type UploadPlan struct {
	// Duration is how long the upload takes before the asset is
	// distributable and the evidence is written; 0 means at once.
	Duration time.Duration
	// Steps is how many progress reports the upload makes over Duration;
	// 0 means 4.
	Steps int
	// Stall makes the upload stop half way and stay there: it keeps
	// reporting the same progress every step, never finishes and never
	// writes evidence, until it is stopped.
	Stall bool
	// Fail makes the upload fail half way with this reason. Nothing is
	// written: as on a Mac, the chat's properties never gain
	// backgroundProperties for the new asset.
	Fail string
	// LoseAt in (0, 1] makes the upload vanish once that fraction of it was
	// reported: no more progress, no error and no evidence, ever.
	LoseAt float64
}

// ErrUploadStopped is the result of an upload stopped before it finished.
var ErrUploadStopped = errors.New("sim: background upload stopped")

// UploadError is the result of an upload that failed as planned.
type UploadError struct{ Reason string }

func (e *UploadError) Error() string { return "sim: background upload failed: " + e.Reason }

// Upload is a background upload in progress. It runs on its own, as the
// upload runs inside Messages on a Mac: the caller going away (an agent
// crash) does not stop it; Stop does. It is also recorded in the simulated
// Messages folder (see ResumeUploads), so that even the process ending does
// not lose it: a Store opened again on the folder carries it on.
type Upload struct {
	chat    string
	assetID string
	done    chan struct{}
	stop    chan struct{}
	once    sync.Once
	err     error // set before done is closed
}

// AssetID is the id (trabaid) the asset will have once it is distributable.
func (u *Upload) AssetID() string { return u.assetID }

// ChatGUID is the chat whose background is being set.
func (u *Upload) ChatGUID() string { return u.chat }

// Done is closed when the upload finished, failed or was stopped. A stalled
// or lost upload is done only once stopped.
func (u *Upload) Done() <-chan struct{} { return u.done }

// Err is the upload's result once Done is closed: nil when the evidence was
// written, an *UploadError for a planned failure, ErrUploadStopped after
// Stop, or the error writing the evidence.
func (u *Upload) Err() error {
	<-u.done
	return u.err
}

// Stop ends the upload in this process (writing nothing) and waits until it
// has ended. It does nothing to an upload that already finished. Like
// Messages quitting mid-upload, it keeps the upload's record: a later
// ResumeUploads on the same folder carries the upload on.
func (u *Upload) Stop() {
	u.once.Do(func() { close(u.stop) })
	<-u.done
}

// StartUpload begins a simulated iCloud upload of image as the background of
// chatGUID and returns at once. progress (which may be nil) is called from
// the upload's goroutine with the bytes done so far. Unless the plan stalls,
// fails or loses it, after plan.Duration the upload writes the evidence a Mac
// writes through SetBackground: backgroundProperties for a new asset (new
// trabaid, a locator, key and signature, the image's size) and the item_type
// 3 / group_action_type 4 row.
//
// The upload is first recorded durably in the folder of chat.db (chat,
// asset id, start, plan and size; never the key material), so that a
// process ending mid-upload does not end the upload: ResumeUploads on a
// Store opened again finishes it at its original start plus Duration.
func (s *Store) StartUpload(chatGUID string, image []byte, plan UploadPlan, progress func(done, total int64)) (*Upload, error) {
	chat, err := s.Chat(context.Background(), chatGUID)
	if err != nil {
		return nil, err
	}
	if len(image) == 0 {
		return nil, fmt.Errorf("sim: a background needs an image")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errClosed
	}
	rec := uploadRecord{
		Version: uploadRecordVersion,
		Chat:    chat.GUID,
		AssetID: s.newGUID(),
		Channel: s.newGUID(),
		RowGUID: s.newGUID(),
		Started: time.Now(),
		Size:    int64(len(image)),
		Plan:    recordPlan(plan),
	}
	s.mu.Unlock()
	path := s.uploadPath(rec.AssetID)
	if err := writeRecord(path, rec); err != nil {
		return nil, err
	}
	if !claimUpload(path) {
		return nil, fmt.Errorf("sim: upload %s is already running", rec.AssetID) // cannot happen: the id is new
	}
	return s.goUpload(path, rec, progress), nil
}

// goUpload runs the upload rec (recorded at path and claimed) on its own
// goroutine.
func (s *Store) goUpload(path string, rec uploadRecord, progress func(done, total int64)) *Upload {
	u := &Upload{chat: rec.Chat, assetID: rec.AssetID, done: make(chan struct{}), stop: make(chan struct{})}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	go func() {
		defer close(u.done)
		defer releaseUpload(path)
		u.err = s.runUpload(u, path, rec, progress)
	}()
	return u
}

// UploadBackground is StartUpload that waits for the upload to end and
// returns the new asset id once the evidence is written. When ctx ends first
// the upload is stopped and ctx's error returned.
func (s *Store) UploadBackground(ctx context.Context, chatGUID string, image []byte, plan UploadPlan, progress func(done, total int64)) (string, error) {
	u, err := s.StartUpload(chatGUID, image, plan, progress)
	if err != nil {
		return "", err
	}
	select {
	case <-u.done:
		if u.err != nil {
			return "", u.err
		}
		return u.assetID, nil
	case <-ctx.Done():
		u.Stop()
		if u.err == nil {
			return u.assetID, nil // finished while stopping
		}
		return "", ctx.Err()
	}
}

// runUpload plays rec's plan on its original schedule: step i is due at
// rec.Started + i*Duration/Steps, so a resumed upload finishes when the
// original would have (at once when that passed). Its record is removed
// once the upload finished, failed or was lost; a stopped or stalled upload
// keeps it.
func (s *Store) runUpload(u *Upload, path string, rec uploadRecord, progress func(done, total int64)) error {
	plan := rec.Plan.plan()
	steps := plan.Steps
	if steps <= 0 {
		steps = 4
	}
	total := rec.Size
	step := plan.Duration / time.Duration(steps)
	half := steps / 2
	until := func(i int) bool {
		d := time.Until(rec.Started.Add(time.Duration(i) * step))
		if step <= 0 || d <= 0 {
			select {
			case <-u.stop:
				return false
			default:
				return true
			}
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-u.stop:
			return false
		}
	}
	progress(0, total)
	for i := 1; i <= steps; i++ {
		if !until(i) {
			return ErrUploadStopped
		}
		if (plan.Stall || plan.Fail != "") && i > half {
			break
		}
		done := total * int64(i) / int64(steps)
		if i == steps {
			done = total
		}
		if plan.LoseAt > 0 && float64(i)/float64(steps) > plan.LoseAt {
			removeRecord(path) // Messages forgot it: it never comes back
			<-u.stop           // vanished: silence until abandoned
			return ErrUploadStopped
		}
		progress(done, total)
	}
	switch {
	case plan.Fail != "":
		removeRecord(path)
		return &UploadError{Reason: plan.Fail}
	case plan.Stall:
		stuck := total * int64(half) / int64(steps)
		if step <= 0 {
			step = 100 * time.Millisecond
		}
		for {
			t := time.NewTimer(step)
			select {
			case <-t.C:
				progress(stuck, total)
			case <-u.stop:
				t.Stop()
				return ErrUploadStopped
			}
		}
	}
	select {
	case <-u.stop:
		return ErrUploadStopped
	default:
	}
	err := s.finishUpload(context.Background(), rec)
	if err == nil || errors.Is(err, ErrNoChat) {
		removeRecord(path) // done, or never possible: the chat is gone
	}
	return err
}

// randomBytes returns n bytes from the Store's generator; s.mu must be held.
func (s *Store) randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(s.rnd.Uint32())
	}
	return b
}
