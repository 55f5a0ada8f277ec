package sim

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// records lists the upload records in st's folder.
func records(t *testing.T, st *Store) []string {
	t.Helper()
	es, err := os.ReadDir(st.uploadsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// reopen closes st ("the process died") and opens its chat.db again.
func reopen(t *testing.T, st *Store) *Store {
	t.Helper()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := Create(st.Path(), WithSeed(99))
	if err != nil {
		t.Fatal(err)
	}
	return st2
}

func resumeOne(t *testing.T, st *Store) *Upload {
	t.Helper()
	ups, err := st.ResumeUploads(context.Background())
	if err != nil || len(ups) != 1 {
		t.Fatalf("resumed %d uploads: %v", len(ups), err)
	}
	return ups[0]
}

func TestUploadResumesOnItsOriginalSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, c := uploadEnv(t)
		start := time.Now()
		u, err := st.StartUpload(c.GUID, make([]byte, 1000), UploadPlan{Duration: 10 * time.Second, Steps: 5}, nil)
		if err != nil {
			t.Fatal(err)
		}
		recs := records(t, st)
		if len(recs) != 1 || recs[0] != u.AssetID()+".json" {
			t.Fatalf("records %v", recs)
		}
		path := filepath.Join(st.uploadsDir(), recs[0])
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("record %v %v", fi, err)
		}
		raw, _ := os.ReadFile(path)
		for _, secret := range []string{"trabak", "trabas", "trabar", "key", "signature", "icloud-content"} {
			if strings.Contains(string(raw), secret) {
				t.Fatalf("record holds %q: %s", secret, raw)
			}
		}
		time.Sleep(4 * time.Second)
		u.Stop() // the process ends mid-upload
		if !errors.Is(u.Err(), ErrUploadStopped) || len(records(t, st)) != 1 {
			t.Fatalf("stopped: %v, records %v", u.Err(), records(t, st))
		}
		time.Sleep(2 * time.Second) // down for a while
		st = reopen(t, st)
		defer st.Close()
		r := resumeOne(t, st)
		if r.AssetID() != u.AssetID() || r.ChatGUID() != c.GUID {
			t.Fatalf("resumed %s in %s", r.AssetID(), r.ChatGUID())
		}
		if again, err := st.ResumeUploads(context.Background()); err != nil || len(again) != 0 {
			t.Fatalf("a running upload was resumed again: %d %v", len(again), err)
		}
		time.Sleep(3999 * time.Millisecond)
		synctest.Wait()
		if bp := backgroundOf(t, st, c.GUID); bp != nil || setRows(t, st) != 0 {
			t.Fatalf("evidence before the original end: %v", bp)
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 10*time.Second {
			t.Errorf("finished after %v, want the original 10s", el)
		}
		bp := backgroundOf(t, st, c.GUID)
		if bp["trabaid"] != u.AssetID() || bp["trabar"] == "" || len(bp["trabak"].([]byte)) == 0 || len(bp["trabas"].([]byte)) == 0 || bp["trabafs"] != uint64(1000) {
			t.Errorf("properties %v", bp)
		}
		if n := setRows(t, st); n != 1 {
			t.Errorf("%d set rows", n)
		}
		if recs := records(t, st); len(recs) != 0 {
			t.Errorf("records left: %v", recs)
		}
	})
}

func TestUploadResumedAfterItsEndFinishesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, c := uploadEnv(t)
		u, err := st.StartUpload(c.GUID, make([]byte, 10), UploadPlan{Duration: 4 * time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		u.Stop()
		time.Sleep(time.Minute) // down past the upload's end
		st = reopen(t, st)
		defer st.Close()
		before := time.Now()
		r := resumeOne(t, st)
		if err := r.Err(); err != nil || time.Since(before) != 0 {
			t.Fatalf("resumed: %v after %v", err, time.Since(before))
		}
		if bp := backgroundOf(t, st, c.GUID); bp["trabaid"] != u.AssetID() || setRows(t, st) != 1 {
			t.Fatalf("properties %v, %d set rows", bp, setRows(t, st))
		}
		if ups, err := st.ResumeUploads(context.Background()); err != nil || len(ups) != 0 {
			t.Fatalf("resumed again: %d %v", len(ups), err)
		}
	})
}

func TestUploadFinishedTwiceWritesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, c := uploadEnv(t)
		u, err := st.StartUpload(c.GUID, make([]byte, 10), UploadPlan{Duration: time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		path := st.uploadPath(u.AssetID())
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Err(); err != nil {
			t.Fatal(err)
		}
		key := backgroundOf(t, st, c.GUID)["trabak"].([]byte)
		// The process died after the evidence, before the record was removed.
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		// And left a half-written record behind.
		if err := os.WriteFile(filepath.Join(st.uploadsDir(), ".upload-1.tmp"), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		st = reopen(t, st)
		defer st.Close()
		if err := resumeOne(t, st).Err(); err != nil {
			t.Fatal(err)
		}
		bp := backgroundOf(t, st, c.GUID)
		if bp["trabaid"] != u.AssetID() || !bytes.Equal(bp["trabak"].([]byte), key) || setRows(t, st) != 1 {
			t.Fatalf("properties %v, %d set rows", bp, setRows(t, st))
		}
		if recs := records(t, st); len(recs) != 0 {
			t.Fatalf("records left: %v", recs)
		}
	})
}

func TestUploadRecordsOfFailedStalledLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, c := uploadEnv(t)
		img := make([]byte, 100)

		// A failure is over: its record goes.
		f, err := st.StartUpload(c.GUID, img, UploadPlan{Duration: time.Second, Fail: "quota"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ue *UploadError
		if !errors.As(f.Err(), &ue) || len(records(t, st)) != 0 {
			t.Fatalf("failed: %v, records %v", f.Err(), records(t, st))
		}

		// A lost upload is forgotten by Messages once it vanishes.
		l, err := st.StartUpload(c.GUID, img, UploadPlan{Duration: time.Second, LoseAt: 0.5}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if len(records(t, st)) != 0 {
			t.Fatalf("a lost upload is still recorded: %v", records(t, st))
		}
		l.Stop()

		// A stalled one stays stalled across a restart, without evidence.
		s, err := st.StartUpload(c.GUID, img, UploadPlan{Duration: time.Second, Stall: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		s.Stop()
		st = reopen(t, st)
		defer st.Close()
		r := resumeOne(t, st)
		time.Sleep(time.Minute)
		synctest.Wait()
		select {
		case <-r.Done():
			t.Fatalf("a resumed stalled upload ended: %v", r.Err())
		default:
		}
		r.Stop()
		if bp := backgroundOf(t, st, c.GUID); bp != nil || setRows(t, st) != 0 || len(records(t, st)) != 1 {
			t.Fatalf("properties %v, %d set rows, records %v", bp, setRows(t, st), records(t, st))
		}
	})
}

func TestResumeUploadsWithNothingRecordedAndBadRecords(t *testing.T) {
	st, c := uploadEnv(t)
	defer st.Close()
	if ups, err := st.ResumeUploads(context.Background()); err != nil || len(ups) != 0 {
		t.Fatalf("%d %v", len(ups), err)
	}
	if err := os.MkdirAll(st.uploadsDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.uploadsDir(), "BAD.json"), []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := st.StartUpload(c.GUID, make([]byte, 10), UploadPlan{Duration: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	u.Stop()
	ups, err := st.ResumeUploads(context.Background())
	if err == nil || len(ups) != 1 || ups[0].AssetID() != u.AssetID() {
		t.Fatalf("%d uploads, %v", len(ups), err)
	}
	ups[0].Stop()
}
