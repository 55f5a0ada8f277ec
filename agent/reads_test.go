package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// readsEnv is a simulated chat.db with one conversation, read through the
// real chat.db reader.
type readsEnv struct {
	store  *sim.Store
	reader *chatdb.Reader
	chat   sim.Chat
	msg    sim.Row
}

func newReadsEnv(t *testing.T) *readsEnv {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chat.db")
	st, err := sim.Create(path, sim.WithLine(testLine))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557654321"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.Insert(ctx, sim.Msg{Chat: c.GUID, Text: "hello from the peer"})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := chatdb.Open(path, chatdb.Options{Line: testLine, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return &readsEnv{store: st, reader: rd, chat: c, msg: m}
}

func getMessage(id, guid string) *linev1.Command {
	return &linev1.Command{Id: id, Line: testLine, Deadline: timestamppb.New(time.Now().Add(20 * time.Second)),
		Kind: &linev1.Command_GetMessage{GetMessage: &linev1.GetMessage{MessageGuid: guid}}}
}

func getChat(id, chat string) *linev1.Command {
	return &linev1.Command{Id: id, Line: testLine, Target: &linev1.Command_ChatGuid{ChatGuid: chat},
		Deadline: timestamppb.New(time.Now().Add(20 * time.Second)),
		Kind:     &linev1.Command_GetChat{GetChat: &linev1.GetChat{}}}
}

func errCode(res *linev1.CommandResult) linev1.ErrorCode { return res.GetError().GetCode() }

// Reads are answered from chat.db, need no Messages capability, never
// reach the driver and leave nothing in the journal.
func TestReadsAnswerFromChatDBWithoutJournalOrDriver(t *testing.T) {
	ctx := context.Background()
	e := newReadsEnv(t)
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	drv := &countingDriver{caps: []linev1.Capability{}} // offers nothing
	out := newFrames()
	d := NewDispatcher(ctx, DispatcherOptions{Driver: drv, Journal: j, Emit: out.emit, Lines: []string{testLine}, ChatDB: e.reader, Logger: testLogger(t)})

	d.Submit(ctx, getMessage("r-1", e.msg.GUID))
	res := out.result(t, "r-1", 5*time.Second)
	sm := res.GetSnapshot().GetStoredMessage()
	if res.GetError() != nil || sm.GetEvent().GetMessageGuid() != e.msg.GUID || sm.GetEvent().GetMessage().GetText() != "hello from the peer" ||
		res.GetSnapshot().GetMessageGuid() != e.msg.GUID || res.GetSnapshot().GetChatGuid() != e.chat.GUID {
		t.Fatalf("get_message: %v", res)
	}
	d.Submit(ctx, getChat("r-2", "any;-;+15557654321"))
	res = out.result(t, "r-2", 5*time.Second)
	if sc := res.GetSnapshot().GetStoredChat(); sc.GetChatGuid() != e.chat.GUID || len(sc.GetParticipants()) != 1 || sc.GetParticipants()[0].GetHandle() != "+15557654321" {
		t.Fatalf("get_chat: %v", res)
	}
	d.Submit(ctx, getMessage("r-3", "NO-SUCH-GUID"))
	if res := out.result(t, "r-3", 5*time.Second); errCode(res) != linev1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Errorf("unknown message: %v", res)
	}
	d.Submit(ctx, getChat("r-4", "any;-;+15550009999"))
	if res := out.result(t, "r-4", 5*time.Second); errCode(res) != linev1.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Errorf("unknown chat: %v", res)
	}
	d.Submit(ctx, getChat("r-5", ""))
	if res := out.result(t, "r-5", 5*time.Second); errCode(res) != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Errorf("get_chat without a chat: %v", res)
	}
	other := getMessage("r-6", e.msg.GUID)
	other.Line = "+15559998888"
	d.Submit(ctx, other)
	if res := out.result(t, "r-6", 5*time.Second); errCode(res) != linev1.ErrorCode_ERROR_CODE_MISROUTED {
		t.Errorf("a read for a line not served: %v", res)
	}
	for _, id := range []string{"r-1", "r-2", "r-3", "r-4", "r-5", "r-6"} {
		if rec, err := j.Lookup(ctx, id); err != nil || rec != nil {
			t.Errorf("%s is in the journal: %+v %v", id, rec, err)
		}
		if n := drv.count(id); n != 0 {
			t.Errorf("%s reached the driver %d times", id, n)
		}
	}
	out.mu.Lock()
	for _, f := range out.all {
		if f.GetUpdate() != nil {
			t.Errorf("a read reported progress: %v", f)
		}
	}
	out.mu.Unlock()
}

// A read of a chat whose send is still in Messages' hands is answered at
// once: reads wait in no chat's queue.
func TestReadNotHeldUpBySlowSend(t *testing.T) {
	ctx := context.Background()
	e := newReadsEnv(t)
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	drv := &countingDriver{gate: make(chan struct{})}
	out := newFrames()
	d := NewDispatcher(ctx, DispatcherOptions{Driver: drv, Journal: j, Emit: out.emit, Lines: []string{testLine}, ChatDB: e.reader, Logger: testLogger(t)})
	d.Submit(ctx, sendText("s-1")) // the same chat as e.chat
	drv.waitRun(t, "s-1", 5*time.Second)
	d.Submit(ctx, getChat("r-1", e.chat.GUID))
	if res := out.result(t, "r-1", 5*time.Second); res.GetSnapshot().GetStoredChat() == nil {
		t.Fatalf("read behind a running send: %v", res)
	}
	close(drv.gate)
	out.result(t, "s-1", 5*time.Second)
	<-d.Drain()
}

// gatedReader is the real chat.db reader behind a gate, so a test can stop
// the agent while a read is in flight; it counts the reads that began.
type gatedReader struct {
	ChatReader
	gate chan struct{}
	mu   sync.Mutex
	n    int
	in   chan struct{} // receives one value per read begun
}

func (g *gatedReader) ReadMessage(ctx context.Context, guid string) (*linev1.StoredMessage, error) {
	g.mu.Lock()
	g.n++
	g.mu.Unlock()
	g.in <- struct{}{}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.ChatReader.ReadMessage(ctx, guid)
}

func (g *gatedReader) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// A redelivery of a read in flight is not read twice at once; a read cut
// short by a hard stop leaves nothing to settle (no IN_DOUBT) and is simply
// read again by the next process, as is a repeat after its answer.
func TestReadInterruptedIsReadAgainNotInDoubt(t *testing.T) {
	ctx := context.Background()
	e := newReadsEnv(t)
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedReader{ChatReader: e.reader, gate: make(chan struct{}), in: make(chan struct{}, 8)}
	runCtx, kill := context.WithCancel(ctx)
	out := newFrames()
	d := NewDispatcher(runCtx, DispatcherOptions{Driver: &countingDriver{}, Journal: j, Emit: out.emit, Lines: []string{testLine}, ChatDB: g, Logger: testLogger(t)})
	d.Submit(ctx, getMessage("r-1", e.msg.GUID))
	<-g.in
	d.Submit(ctx, getMessage("r-1", e.msg.GUID)) // the relay's redelivery
	if d.InFlight() != 1 || g.count() != 1 {
		t.Fatalf("in flight %d, reads begun %d; want the one", d.InFlight(), g.count())
	}
	kill()
	d.Wait()
	out.mu.Lock()
	for _, f := range out.all {
		if f.GetResult() != nil {
			t.Errorf("a read cut short answered: %v", f)
		}
	}
	out.mu.Unlock()
	j.Close()

	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	settled, resume, err := j.SettleInterrupted(ctx, nil)
	if err != nil || len(settled) != 0 || len(resume) != 0 {
		t.Fatalf("settled %v resume %v err %v; a read leaves nothing to settle", settled, resume, err)
	}
	close(g.gate)
	out = newFrames()
	d = NewDispatcher(ctx, DispatcherOptions{Driver: &countingDriver{}, Journal: j, Emit: out.emit, Lines: []string{testLine}, ChatDB: g, Logger: testLogger(t)})
	d.Submit(ctx, getMessage("r-1", e.msg.GUID))
	if res := out.result(t, "r-1", 5*time.Second); res.GetSnapshot().GetStoredMessage() == nil {
		t.Fatalf("the redelivered read: %v", res)
	}
	<-d.Drain()
	out = newFrames()
	d = NewDispatcher(ctx, DispatcherOptions{Driver: &countingDriver{}, Journal: j, Emit: out.emit, Lines: []string{testLine}, ChatDB: g, Logger: testLogger(t)})
	d.Submit(ctx, getMessage("r-1", e.msg.GUID))
	out.result(t, "r-1", 5*time.Second)
	if g.count() != 3 {
		t.Errorf("%d reads began; want 3 (each delivery after the last answer reads again)", g.count())
	}
	<-d.Drain()
	d.Wait()
}

// Without a chat.db reader a read is UNSUPPORTED, not a silent drop.
func TestReadWithoutChatDBIsUnsupported(t *testing.T) {
	ctx := context.Background()
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	out := newFrames()
	d := NewDispatcher(ctx, DispatcherOptions{Driver: &countingDriver{}, Journal: j, Emit: out.emit, Lines: []string{testLine}, Logger: testLogger(t)})
	d.Submit(ctx, getMessage("r-1", "G"))
	if res := out.result(t, "r-1", 5*time.Second); errCode(res) != linev1.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Errorf("no reader: %v", res)
	}
	<-d.Drain()
	d.Wait()
}
