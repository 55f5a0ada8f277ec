package applescript

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// quiet drops logs: the tests assert on results, not on log lines.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeBin is the fake osascript, built once for the whole test binary.
var fakeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakeosascript-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeBin = filepath.Join(dir, "fakeosascript")
	build := exec.Command("go", "build", "-o", fakeBin, "./internal/fakeosascript")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the fake osascript: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// record mirrors fakeosascript's log record.
type record struct {
	Script     string   `json:"script"`
	Argv       []string `json:"argv"`
	Pid        int      `json:"pid"`
	FileSHA256 string   `json:"file_sha256"`
	FileMode   string   `json:"file_mode"`
	FileErr    string   `json:"file_err"`
	Open       bool     `json:"open"`
}

// harness is one simulated Mac: a chat.db written by messages/sim, a fake
// osascript that writes into it, and a Sender confirming from it.
type harness struct {
	t        *testing.T
	dir      string
	store    *sim.Store
	db       *chatdb.Reader
	logPath  string
	stageDir string
	sender   *Sender
}

// Chats every harness has, as Messages would after earlier conversations.
const (
	chatOne   = "iMessage;-;+15551230001"
	chatAny   = "any;-;+15551230002"
	chatGroup = "any;+;chat123456789012345678"
)

func newHarness(t *testing.T, env []string, tweak func(*Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, logPath: filepath.Join(dir, "osascript.log"), stageDir: filepath.Join(dir, "Pictures", "line-agent-outbox")}
	dbPath := filepath.Join(dir, "chat.db")
	store, err := sim.Create(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h.store = store
	ctx := context.Background()
	for _, spec := range []sim.ChatSpec{
		{GUID: chatOne},
		{GUID: chatAny},
		{GUID: chatGroup, Participants: []string{"+15551230005", "+15551230006"}},
	} {
		if _, err := store.EnsureChat(ctx, spec); err != nil {
			t.Fatalf("EnsureChat %s: %v", spec.GUID, err)
		}
	}
	db, err := chatdb.Open(dbPath, chatdb.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	h.db = db
	opts := Options{
		OsascriptPath: fakeBin,
		OpenPath:      fakeBin,
		ChatDB:        db,
		StageDir:      h.stageDir,
		Timeout:       10 * time.Second,
		LaunchWait:    10 * time.Millisecond,
		Logger:        quiet,
		Env: append([]string{
			"FAKEOSA_LOG=" + h.logPath,
			"FAKEOSA_DB=" + dbPath,
			"FAKEOSA_STATE=" + filepath.Join(dir, "failed-once"),
			"FAKEOSA_PIDS=" + filepath.Join(dir, "pids"),
		}, env...),
	}
	if tweak != nil {
		tweak(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.sender = s
	return h
}

// records returns every run the fake logged, in order.
func (h *harness) records() []record {
	h.t.Helper()
	f, err := os.Open(h.logPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 4<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			h.t.Fatalf("log line: %v", err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// exec runs cmd with a 20 s deadline unless ctx has one.
func (h *harness) exec(cmd *linev1.Command) (*linev1.Snapshot, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return h.sender.Execute(ctx, cmd, func(*linev1.CommandUpdate) {})
}

func textTo(chat, text string) *linev1.Command {
	return &linev1.Command{Id: "c1", Target: &linev1.Command_ChatGuid{ChatGuid: chat},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: text}}}
}

func textToHandles(text string, handles ...string) *linev1.Command {
	return &linev1.Command{Id: "c1", Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: handles}},
		Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: text}}}
}

func fileTo(chat string, sa *linev1.SendAttachment) *linev1.Command {
	return &linev1.Command{Id: "c1", Target: &linev1.Command_ChatGuid{ChatGuid: chat},
		Kind: &linev1.Command_SendAttachment{SendAttachment: sa}}
}

// wantCode asserts err is a *command.Error with code c and returns it.
func wantCode(t *testing.T, err error, c linev1.ErrorCode) *command.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("want %s, got success", command.CodeName(c))
	}
	var me *command.Error
	if !errors.As(err, &me) {
		t.Fatalf("want *command.Error, got %T: %v", err, err)
	}
	if me.Code != c {
		t.Fatalf("want %s, got %v", command.CodeName(c), me)
	}
	return me
}

// rowText returns the body chat.db holds for guid, decoded by the reader.
func (h *harness) rowText(guid string) string {
	h.t.Helper()
	st, err := h.db.LookupMessage(context.Background(), guid)
	if err != nil {
		h.t.Fatal(err)
	}
	return st.Text
}
