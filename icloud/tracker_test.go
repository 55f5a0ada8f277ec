package icloud_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/line-agent/line-agent/icloud"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

type env struct {
	store *sim.Store
	rd    *chatdb.Reader
	chat  string
	path  string
	opts  icloud.Options
}

// newEnv builds a simulated chat.db and a Reader inside the current bubble;
// the caller defers close.
func newEnv(t *testing.T) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithSeed(5))
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.EnsureChat(context.Background(), sim.ChatSpec{Participants: []string{"+15551234567"}})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := chatdb.Open(path, chatdb.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &env{store: st, rd: rd, chat: c.GUID, path: path,
		opts: icloud.Options{Poll: 250 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
}

func (e *env) close() { e.rd.Close(); e.store.Close() }

// upload starts a simulated upload whose progress the "agent" forwards to
// tr, and whose failure it reports with Fail, as the agent would with the
// helper's events and answer.
func (e *env) upload(t *testing.T, tr *icloud.Tracker, plan sim.UploadPlan) *sim.Upload {
	t.Helper()
	u, err := e.store.StartUpload(e.chat, make([]byte, 1<<20), plan, func(done, total int64) {
		tr.Observe(icloud.Progress{Stage: "uploading", Done: done, Total: total})
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		var ue *sim.UploadError
		if errors.As(u.Err(), &ue) {
			tr.Fail(ue.Reason)
		}
	}()
	return u
}

type reports struct {
	mu sync.Mutex
	s  []icloud.State
	at []time.Time
}

func (r *reports) add(s icloud.State) {
	r.mu.Lock()
	r.s = append(r.s, s)
	r.at = append(r.at, time.Now())
	r.mu.Unlock()
}

func deadline(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func TestDistributableOnlyAfterDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		defer e.close()
		tr, err := icloud.Start(context.Background(), e.rd, icloud.Spec{ChatGUID: e.chat}, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		u := e.upload(t, tr, sim.UploadPlan{Duration: 3 * time.Second})
		defer u.Stop()
		var rep reports
		ctx, cancel := deadline(120 * time.Second)
		defer cancel()
		st, err := tr.Wait(ctx, rep.add)
		if err != nil {
			t.Fatal(err)
		}
		if st.Phase != icloud.Distributable || st.AssetID != u.AssetID() {
			t.Fatalf("state %v, want distributable %s", st, u.AssetID())
		}
		if el := time.Since(start); el < 3*time.Second || el > 3*time.Second+time.Second {
			t.Errorf("distributable after %v", el)
		}
		uploading := 0
		for i, s := range rep.s {
			if s.Phase == icloud.Distributable && (i != len(rep.s)-1 || rep.at[i].Sub(start) < 3*time.Second) {
				t.Errorf("distributable reported at %v (report %d of %d)", rep.at[i].Sub(start), i, len(rep.s))
			}
			if s.Phase == icloud.Uploading && s.Total > 0 {
				uploading++
			}
		}
		if uploading < 3 {
			t.Errorf("progress reports %v", rep.s)
		}
	})
}

func TestStalledUploadMissesDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		defer e.close()
		tr, err := icloud.Start(context.Background(), e.rd, icloud.Spec{ChatGUID: e.chat}, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		u := e.upload(t, tr, sim.UploadPlan{Duration: 4 * time.Second, Stall: true})
		defer u.Stop()
		start := time.Now()
		ctx, cancel := deadline(120 * time.Second)
		defer cancel()
		st, err := tr.Wait(ctx, nil)
		var nd *icloud.NotDistributableError
		if !errors.As(err, &nd) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v", err)
		}
		if time.Since(start) != 120*time.Second {
			t.Errorf("gave up after %v", time.Since(start))
		}
		if st.Phase != icloud.Uploading || nd.State.Phase != icloud.Uploading || st.Done != 1<<19 || st.Total != 1<<20 {
			t.Errorf("last state %v / %v", st, nd.State)
		}
		if !strings.Contains(err.Error(), "uploading 524288/1048576") {
			t.Errorf("message %q", err)
		}
	})
}

func TestFailedUpload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		defer e.close()
		tr, err := icloud.Start(context.Background(), e.rd, icloud.Spec{ChatGUID: e.chat}, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		e.upload(t, tr, sim.UploadPlan{Duration: 2 * time.Second, Fail: "iCloud storage full"})
		start := time.Now()
		ctx, cancel := deadline(120 * time.Second)
		defer cancel()
		st, err := tr.Wait(ctx, nil)
		if !errors.Is(err, icloud.ErrFailed) || st.Phase != icloud.Failed || st.Reason != "iCloud storage full" {
			t.Fatalf("state %v err %v", st, err)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("failure noticed after %v", time.Since(start))
		}
		if bg, _ := e.rd.ChatBackground(context.Background(), e.chat); bg.Set {
			t.Errorf("a failed upload left a background: %v", bg)
		}
		// Terminal: later progress does not revive it.
		tr.Observe(icloud.Progress{Stage: "uploading", Done: 1, Total: 2})
		if tr.State().Phase != icloud.Failed {
			t.Errorf("revived: %v", tr.State())
		}
	})
}

func TestLostUploadMissesDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		defer e.close()
		tr, err := icloud.Start(context.Background(), e.rd, icloud.Spec{ChatGUID: e.chat}, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		u := e.upload(t, tr, sim.UploadPlan{Duration: 4 * time.Second, LoseAt: 0.5})
		defer u.Stop()
		ctx, cancel := deadline(120 * time.Second)
		defer cancel()
		st, err := tr.Wait(ctx, nil)
		if !errors.Is(err, context.DeadlineExceeded) || st.Phase != icloud.Uploading || st.Done != 1<<19 {
			t.Fatalf("state %v err %v", st, err)
		}
		if !strings.Contains(st.Evidence, "no backgroundProperties") {
			t.Errorf("evidence %q", st.Evidence)
		}
	})
}

func TestOldAssetOrUnsignedIsNotDistributable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := newEnv(t)
		defer e.close()
		full := func(id string) sim.Background {
			return sim.Background{AssetID: id, URL: "https://cvws.icloud-content.com/B/" + id, Key: []byte("k"), Signature: []byte("s"), Size: 10, Version: 1}
		}
		if _, err := e.store.SetBackground(ctx, e.chat, "", full("OLD")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		tr, err := icloud.Start(ctx, e.rd, icloud.Spec{ChatGUID: e.chat}, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		// The old asset again, with a fresh set row: not the new asset.
		time.Sleep(time.Second)
		if _, err := e.store.SetBackground(ctx, e.chat, "", full("OLD")); err != nil {
			t.Fatal(err)
		}
		if st, err := tr.Check(ctx); err != nil || st.Phase == icloud.Distributable || !strings.Contains(st.Evidence, "previous asset") {
			t.Fatalf("old asset: %v %v", st, err)
		}
		// A new asset without a signature: not distributable.
		unsigned := full("NEW")
		unsigned.Signature = nil
		if _, err := e.store.SetBackground(ctx, e.chat, "", unsigned); err != nil {
			t.Fatal(err)
		}
		if st, err := tr.Check(ctx); err != nil || st.Phase != icloud.Uploading || !strings.Contains(st.Evidence, "signature") {
			t.Fatalf("unsigned: %v %v", st, err)
		}
		wctx, cancel := deadline(10 * time.Second)
		st, err := tr.Wait(wctx, nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || st.Phase == icloud.Distributable {
			t.Fatalf("unsigned wait: %v %v", st, err)
		}
		// An expected asset id rules out any other new asset.
		tr2, err := icloud.Start(ctx, e.rd, icloud.Spec{ChatGUID: e.chat, AssetID: "EXPECTED"}, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if _, err := e.store.SetBackground(ctx, e.chat, "", full("OTHER")); err != nil {
			t.Fatal(err)
		}
		if st, _ := tr2.Check(ctx); st.Phase == icloud.Distributable || !strings.Contains(st.Evidence, "another asset") {
			t.Fatalf("other asset: %v", st)
		}
		if _, err := e.store.SetBackground(ctx, e.chat, "", full("EXPECTED")); err != nil {
			t.Fatal(err)
		}
		if st, _ := tr2.Check(ctx); st.Phase != icloud.Distributable || st.AssetID != "EXPECTED" {
			t.Fatalf("expected asset: %v", st)
		}
		// Once signed, the first tracker's new asset is gone (replaced), so
		// it still waits; the one that reached distributable stays there.
		if st, _ := tr.Check(ctx); st.Phase == icloud.Distributable && st.AssetID == "OLD" {
			t.Fatalf("old asset accepted: %v", st)
		}
	})
}

// fakeEvidence serves fixed answers, for the row rules.
type fakeEvidence struct {
	bg     chatdb.Background
	row    chatdb.BackgroundRow
	rowErr error
}

func (f *fakeEvidence) ChatBackground(context.Context, string) (chatdb.Background, error) {
	return f.bg, nil
}

func (f *fakeEvidence) BackgroundRow(_ context.Context, _ string, since time.Time) (chatdb.BackgroundRow, error) {
	if f.rowErr != nil {
		return chatdb.BackgroundRow{}, f.rowErr
	}
	if f.row.Date.Before(since) {
		return chatdb.BackgroundRow{}, chatdb.ErrNotFound
	}
	return f.row, nil
}

func TestPropertiesWithoutSetRowIsNotDistributable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := &fakeEvidence{}
		tr, err := icloud.Start(ctx, f, icloud.Spec{ChatGUID: "iMessage;-;+15551234567"}, icloud.Options{})
		if err != nil {
			t.Fatal(err)
		}
		f.bg = chatdb.Background{Set: true, AssetID: "N", Locator: "https://x", HasKey: true, HasSignature: true}
		// A set row from before the start does not count.
		f.row = chatdb.BackgroundRow{GUID: "R0", Date: time.Now().Add(-time.Minute)}
		if st, _ := tr.Check(ctx); st.Phase == icloud.Distributable || st.Evidence != "no background-set row yet" {
			t.Fatalf("old row: %v", st)
		}
		time.Sleep(time.Second)
		f.row = chatdb.BackgroundRow{GUID: "R1", Removed: true, Date: time.Now()}
		if st, _ := tr.Check(ctx); st.Phase == icloud.Distributable {
			t.Fatalf("removal row: %v", st)
		}
		f.row = chatdb.BackgroundRow{GUID: "R2", Date: time.Now()}
		// Progress claiming completion is not evidence.
		tr.Observe(icloud.Progress{Stage: "distributable", Done: 5, Total: 5})
		if tr.State().Phase != icloud.Uploading {
			t.Fatalf("notification made it %v", tr.State())
		}
		if st, _ := tr.Check(ctx); st.Phase != icloud.Distributable || st.AssetID != "N" {
			t.Fatalf("complete evidence: %v", st)
		}
	})
}

func TestResumeAfterRestartWithoutReupload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		defer e.close()
		tr, err := icloud.Start(context.Background(), e.rd, icloud.Spec{ChatGUID: e.chat}, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var mu sync.Mutex
		var journal []byte // what the agent persists with the command
		var current *icloud.Tracker = tr
		u, err := e.store.StartUpload(e.chat, make([]byte, 4096), sim.UploadPlan{Duration: 10 * time.Second, Steps: 10}, func(done, total int64) {
			mu.Lock()
			c := current
			mu.Unlock()
			if c != nil {
				c.Observe(icloud.Progress{Stage: "uploading", Done: done, Total: total})
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer u.Stop()
		// The agent runs for 4 s, journaling every state, then crashes.
		ctx, cancel := deadline(4 * time.Second)
		_, err = tr.Wait(ctx, func(icloud.State) {
			mu.Lock()
			journal = tr.Snapshot()
			mu.Unlock()
		})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("first run: %v", err)
		}
		mu.Lock()
		current = nil // the process is gone; Messages keeps uploading
		snap := journal
		mu.Unlock()
		for _, secret := range []string{"trabak", "trabas", "icloud-content"} {
			if strings.Contains(string(snap), secret) {
				t.Errorf("snapshot holds %s: %s", secret, snap)
			}
		}
		time.Sleep(2 * time.Second) // the restart

		tr2, err := icloud.Resume(e.rd, snap, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		if tr2.State().Phase != icloud.Uploading {
			t.Fatalf("resumed in %v", tr2.State())
		}
		mu.Lock()
		current = tr2
		mu.Unlock()
		var rep reports
		ctx, cancel = deadline(120 * time.Second)
		defer cancel()
		st, err := tr2.Wait(ctx, rep.add)
		if err != nil || st.Phase != icloud.Distributable || st.AssetID != u.AssetID() {
			t.Fatalf("after resume: %v %v", st, err)
		}
		if el := time.Since(start); el < 10*time.Second {
			t.Errorf("distributable after %v", el)
		}
		if len(rep.s) == 0 || rep.s[0].Phase != icloud.Uploading {
			t.Errorf("a resumed tracker reports its state first: %v", rep.s)
		}
		if n := setRows(t, e.path); n != 1 { // one upload, one set row
			t.Errorf("set rows %d", n)
		}
	})
}

func setRows(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM message WHERE item_type = 3 AND group_action_type = 4`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
