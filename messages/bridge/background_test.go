package bridge_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/line-agent/line-agent/icloud"
	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/bridge"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/confirm"
	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

const (
	bgLine = "+15550000001"
	bgPeer = "+15551234567"
	bgChat = "iMessage;-;" + bgPeer
	smsBg  = "SMS;-;+15559876543"
)

// bgEnv is a simulated Messages (real WAL chat.db) with the simulated
// helper over the bridge, and a chat.db reader for the evidence.
type bgEnv struct {
	b      *bridge.Bridge
	st     *sim.Store
	store  *simhelper.SimStore
	reader *chatdb.Reader
	db     *sql.DB
	stage  string
}

func startBackground(t *testing.T, plan sim.UploadPlan) *bgEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithLine(bgLine), sim.WithSeed(7))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, spec := range []sim.ChatSpec{{Participants: []string{bgPeer}}, {Service: "SMS", Participants: []string{"+15559876543"}}} {
		if _, err := st.EnsureChat(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}
	reader, err := chatdb.Open(path, chatdb.Options{Line: bgLine})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	store := simhelper.NewSimStore(st, simhelper.SimStoreOptions{Reader: reader, Upload: plan})
	t.Cleanup(store.Close) // after the helper stops (cleanups run last first)
	b, _ := listen(t, bridge.Options{})
	runHelper(t, simhelper.Options{Addr: b.Addr().String(), Messages: store})
	waitReady(t, b)
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &bgEnv{b: b, st: st, store: store, reader: reader, db: db, stage: t.TempDir()}
}

func (e *bgEnv) driver() *bridge.Driver {
	return bridge.NewDriver(e.b, bridge.DriverOptions{Stager: bridge.DirStager{Dir: e.stage},
		Backgrounds: e.reader, Tracker: icloud.Options{Poll: 20 * time.Millisecond}})
}

// confirmed is a driver whose every command is checked and confirmed by the
// real Confirmer over e's chat.db.
func (e *bgEnv) confirmed() *bridge.Driver {
	return bridge.NewDriver(e.b, bridge.DriverOptions{Stager: bridge.DirStager{Dir: e.stage}, Confirm: confirm.New(e.reader, confirm.Options{})})
}

func (e *bgEnv) rows(t *testing.T, action int) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT count(*) FROM message WHERE item_type = 3 AND group_action_type = ?`, action).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func setBg(chat string) *linev1.Command {
	return with(onChat(chat), func(c *linev1.Command) {
		c.Kind = &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{Source: &linev1.SetBackground_Data{Data: pngImage}, MimeType: "image/png"}}
	})
}

func clearBg(chat string) *linev1.Command {
	return with(onChat(chat), func(c *linev1.Command) {
		c.Kind = &linev1.Command_ClearBackground{ClearBackground: &linev1.ClearBackground{}}
	})
}

var pngImage = append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 4096)...)

// updates records CommandUpdates with the time they arrived.
type updates struct {
	mu sync.Mutex
	us []*linev1.CommandUpdate
	at []time.Time
}

func (u *updates) report(x *linev1.CommandUpdate) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.us, u.at = append(u.us, x), append(u.at, time.Now())
}

func (u *updates) stages() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, x := range u.us {
		if s := x.GetProgress().GetStage(); len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

func TestSetBackgroundWaitsForDistributable(t *testing.T) {
	const delay = 600 * time.Millisecond
	e := startBackground(t, sim.UploadPlan{Duration: delay, Steps: 4})
	var u updates
	start := time.Now()
	snap, err := e.driver().Execute(ctx(t), setBg(bgChat), u.report)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("succeeded after %v, before the upload (%v) was distributable", took, delay)
	}
	bg, err := e.reader.ChatBackground(context.Background(), bgChat)
	if err != nil || !bg.Complete() || snap.GetAssetId() != bg.AssetID || snap.GetChatGuid() != bgChat {
		t.Fatalf("snapshot %v, chat.db %v (%v)", snap, bg, err)
	}
	if got := strings.Join(u.stages(), ","); got != "staged,uploading,distributable" {
		t.Fatalf("stages %s", got)
	}
	if e.rows(t, 4) != 1 || e.store.Uploads() != 1 {
		t.Fatalf("%d set rows, %d uploads", e.rows(t, 4), e.store.Uploads())
	}
}

func TestSetBackgroundNotDistributable(t *testing.T) {
	t.Run("failed", func(t *testing.T) {
		e := startBackground(t, sim.UploadPlan{Duration: 200 * time.Millisecond, Fail: "iCloud quota exceeded"})
		_, err := e.driver().Execute(ctx(t), setBg(bgChat), func(*linev1.CommandUpdate) {})
		got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_NOT_DISTRIBUTABLE)
		if !strings.Contains(got.Msg, "iCloud quota exceeded") || !strings.HasPrefix(got.LastState, "failed") {
			t.Fatalf("error %q, last state %q", got.Msg, got.LastState)
		}
	})
	for name, plan := range map[string]sim.UploadPlan{
		"stalled": {Duration: 200 * time.Millisecond, Stall: true},
		"lost":    {Duration: 200 * time.Millisecond, LoseAt: 0.5},
	} {
		t.Run(name, func(t *testing.T) {
			e := startBackground(t, plan)
			c, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := e.driver().Execute(c, setBg(bgChat), func(*linev1.CommandUpdate) {})
			got := wantCode(t, err, linev1.ErrorCode_ERROR_CODE_NOT_DISTRIBUTABLE)
			if !strings.HasPrefix(got.LastState, "uploading") || time.Since(start) < time.Second {
				t.Fatalf("last state %q after %v", got.LastState, time.Since(start))
			}
			if e.rows(t, 4) != 0 {
				t.Fatal("evidence written for an upload that never finished")
			}
		})
	}
}

func TestBackgroundRefusals(t *testing.T) {
	e := startBackground(t, sim.UploadPlan{})
	d := e.driver()
	for _, c := range []*linev1.Command{setBg(smsBg), clearBg(smsBg), setBg("iMessage;-;urn:biz:1234-5678")} {
		_, err := d.Execute(ctx(t), c, nil)
		wantCode(t, err, linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT)
	}
	_, err := d.Execute(ctx(t), setBg("iMessage;-;+15550009999"), nil)
	wantCode(t, err, linev1.ErrorCode_ERROR_CODE_NOT_FOUND)
	if e.store.Uploads() != 0 {
		t.Fatal("a refused background was uploaded")
	}
}

func TestClearBackgroundIsIdempotent(t *testing.T) {
	e := startBackground(t, sim.UploadPlan{})
	d := e.driver()
	if _, err := d.Execute(ctx(t), setBg(bgChat), nil); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		snap, err := d.Execute(ctx(t), clearBg(bgChat), nil)
		if err != nil || snap.GetChatGuid() != bgChat {
			t.Fatalf("clear %d: %v %v", i, snap, err)
		}
		if bg, _ := e.reader.ChatBackground(context.Background(), bgChat); bg.Set {
			t.Fatalf("clear %d: chat still has %v", i, bg)
		}
	}
	if n := e.rows(t, 6); n != 1 {
		t.Fatalf("%d removal rows, want 1 (the second clear had nothing to do)", n)
	}
}

// An agent crash half way: Execute saved the tracker's checkpoint before
// asking the helper; a fresh driver resumes from it and succeeds once the
// asset is distributable, without a second upload.
func TestSetBackgroundResumesAfterCrash(t *testing.T) {
	e := startBackground(t, sim.UploadPlan{Duration: 800 * time.Millisecond, Steps: 8})
	var mu sync.Mutex
	var checkpoint []byte
	saves := 0
	c, crash := context.WithCancel(context.Background())
	c = messages.WithCheckpointer(c, func(b []byte) {
		mu.Lock()
		defer mu.Unlock()
		checkpoint, saves = append([]byte(nil), b...), saves+1
	})
	_, err := e.driver().Execute(c, setBg(bgChat), func(u *linev1.CommandUpdate) {
		if u.GetProgress().GetStage() == "uploading" {
			crash()
		}
	})
	if err == nil {
		t.Fatal("the interrupted command succeeded")
	}
	mu.Lock()
	cp, n := checkpoint, saves
	mu.Unlock()
	if n < 2 || len(cp) == 0 {
		t.Fatalf("%d checkpoints saved", n)
	}
	if e.rows(t, 4) != 0 {
		t.Fatal("the upload finished before the crash; the test proves nothing")
	}
	var u updates
	snap, err := e.driver().Resume(ctx(t), setBg(bgChat), cp, u.report)
	if err != nil {
		t.Fatal(err)
	}
	bg, _ := e.reader.ChatBackground(context.Background(), bgChat)
	if snap.GetAssetId() == "" || snap.GetAssetId() != bg.AssetID {
		t.Fatalf("snapshot %v, chat.db %v", snap, bg)
	}
	if e.store.Uploads() != 1 || e.rows(t, 4) != 1 {
		t.Fatalf("%d uploads, %d set rows: want exactly one", e.store.Uploads(), e.rows(t, 4))
	}
	if st := u.stages(); len(st) == 0 || st[len(st)-1] != "distributable" {
		t.Fatalf("resume reported %v", st)
	}
}
