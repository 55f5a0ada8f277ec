package sim

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"howett.net/plist"
)

// uploadEnv creates a store with one chat inside the current bubble.
func uploadEnv(t *testing.T) (*Store, Chat) {
	t.Helper()
	st, err := Create(filepath.Join(t.TempDir(), "chat.db"), WithSeed(3))
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.EnsureChat(context.Background(), ChatSpec{Participants: []string{"+15551234567"}})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	return st, c
}

func backgroundOf(t *testing.T, st *Store, chat string) map[string]any {
	t.Helper()
	var raw []byte
	if err := st.db.QueryRow(`SELECT properties FROM chat WHERE guid = ?`, chat).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) == 0 {
		return nil
	}
	var p map[string]any
	if _, err := plist.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	bp, _ := p["backgroundProperties"].(map[string]any)
	return bp
}

func setRows(t *testing.T, st *Store) int {
	var n int
	if err := st.db.QueryRow(`SELECT count(*) FROM message WHERE item_type = 3 AND group_action_type = 4`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

type progressLog struct {
	mu   sync.Mutex
	done []int64
	at   []time.Time
}

func (p *progressLog) add(done, total int64) {
	p.mu.Lock()
	p.done = append(p.done, done)
	p.at = append(p.at, time.Now())
	p.mu.Unlock()
}

func (p *progressLog) last() (int64, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.done) == 0 {
		return -1, 0
	}
	return p.done[len(p.done)-1], len(p.done)
}

func TestUploadWritesEvidenceAfterDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, c := uploadEnv(t)
		defer st.Close()
		img := make([]byte, 1000)
		var pl progressLog
		start := time.Now()
		u, err := st.StartUpload(c.GUID, img, UploadPlan{Duration: 3 * time.Second}, pl.add)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2999 * time.Millisecond)
		synctest.Wait()
		if bp := backgroundOf(t, st, c.GUID); bp != nil || setRows(t, st) != 0 {
			t.Fatalf("evidence before the upload finished: %v", bp)
		}
		if err := u.Err(); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 3*time.Second {
			t.Errorf("took %v", el)
		}
		bp := backgroundOf(t, st, c.GUID)
		if bp["trabaid"] != u.AssetID() || bp["trabar"] == "" || len(bp["trabak"].([]byte)) == 0 || len(bp["trabas"].([]byte)) == 0 || bp["trabafs"] != uint64(1000) {
			t.Errorf("properties %v", bp)
		}
		if setRows(t, st) != 1 {
			t.Errorf("set rows %d", setRows(t, st))
		}
		if d, n := pl.last(); d != 1000 || n != 5 {
			t.Errorf("progress last %d count %d (%v)", d, n, pl.done)
		}
		// The blocking form returns a different asset id.
		id, err := st.UploadBackground(context.Background(), c.GUID, img, UploadPlan{}, nil)
		if err != nil || id == "" || id == u.AssetID() {
			t.Errorf("second upload %q %v", id, err)
		}
	})
}

func TestUploadFailStallLose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, c := uploadEnv(t)
		defer st.Close()
		img := make([]byte, 800)

		// Failure: an UploadError with the reason, nothing written.
		_, err := st.UploadBackground(context.Background(), c.GUID, img, UploadPlan{Duration: time.Second, Fail: "quota exceeded"}, nil)
		var ue *UploadError
		if !errors.As(err, &ue) || ue.Reason != "quota exceeded" {
			t.Fatalf("fail: %v", err)
		}

		// Stall: progress repeats half way, forever.
		var stall progressLog
		u, err := st.StartUpload(c.GUID, img, UploadPlan{Duration: 4 * time.Second, Stall: true}, stall.add)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if d, n := stall.last(); d != 400 || n < 10 {
			t.Errorf("stalled progress %d after %d reports", d, n)
		}
		select {
		case <-u.Done():
			t.Fatal("a stalled upload ended on its own")
		default:
		}
		u.Stop()
		if !errors.Is(u.Err(), ErrUploadStopped) {
			t.Errorf("stopped stall: %v", u.Err())
		}

		// Lost half way: progress stops at half, then silence.
		var lost progressLog
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err = st.UploadBackground(ctx, c.GUID, img, UploadPlan{Duration: 4 * time.Second, LoseAt: 0.5}, lost.add)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("lost: %v", err)
		}
		if d, n := lost.last(); d != 400 || n != 3 {
			t.Errorf("lost progress %d after %d reports", d, n)
		}

		if bp := backgroundOf(t, st, c.GUID); bp != nil || setRows(t, st) != 0 {
			t.Errorf("evidence written by a failed, stalled or lost upload: %v", bp)
		}
		if _, err := st.StartUpload("iMessage;-;+19990000000", img, UploadPlan{}, nil); !errors.Is(err, ErrNoChat) {
			t.Errorf("unknown chat: %v", err)
		}
	})
}
