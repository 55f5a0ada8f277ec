package chatdb_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// An attachment that arrives still transferring is reported with its
// message; when Messages finishes it, exactly one attachment event
// follows, also when the tailer was stopped in between and resumes from
// its cursor.
func TestTransferFinishedIsReportedOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.start(t, nil, nil)
	data := []byte("the whole picture, byte for byte")
	r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Text: "look", Attachments: []sim.Attachment{
		{Name: "done.txt", Data: []byte("already here")},
		{GUID: "ATT-PENDING", Name: "cat.jpg", MIME: "image/jpeg", Data: data, TransferState: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := e.sink.waitKeys(t, wait, key(r.GUID, "message", "0"))
	atts := m[key(r.GUID, "message", "0")].GetMessage().GetAttachments()
	if len(atts) != 2 || atts[1].GetTransferState() != 1 || atts[0].GetTransferState() != 5 {
		t.Fatalf("attachments as first read: %v", atts)
	}
	// Nothing more while the file is still coming (a few backstop turns).
	time.Sleep(300 * time.Millisecond)
	if n := len(e.sink.byKey()); n != 1 {
		t.Fatalf("events before the transfer finished: %v", sortedKeys(e.sink.byKey()))
	}

	// Stopped, the transfer finishes, started again from the cursor.
	e.halt()
	_, cursor := e.sink.snapshot()
	must(t, e.store.FinishTransfer(ctx, "ATT-PENDING", data))
	e.start(t, cursor, nil)
	k := key(r.GUID, "attachment", "ATT-PENDING")
	m = e.sink.waitKeys(t, wait, k)
	got := m[k].GetAttachmentTransferred().GetAttachment()
	if got.GetGuid() != "ATT-PENDING" || got.GetTransferState() != 5 || got.GetSize() != uint64(len(data)) || got.GetFileName() != "cat.jpg" || m[k].GetMessageGuid() != r.GUID {
		t.Errorf("attachment event %v (envelope %v)", got, m[k])
	}

	// Later changes to the row (read) bring no second attachment event.
	must(t, e.store.MarkRead(ctx, r.GUID))
	e.sink.waitKeys(t, wait, key(r.GUID, "read", "0"))
	evs, _ := e.sink.snapshot()
	n := 0
	for _, ev := range evs {
		if ev.GetAttachmentTransferred() != nil {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d attachment events, want exactly 1", n)
	}
	noDuplicates(t, evs)
}

// A baseline taken while a file is transferring still notices it finish.
func TestTransferFinishedAfterBaseline(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Attachments: []sim.Attachment{{GUID: "ATT-2", Name: "a.bin", Data: []byte("0123456789"), TransferState: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	e.start(t, nil, nil)
	must(t, e.store.FinishTransfer(ctx, "ATT-2", []byte("0123456789")))
	e.sink.waitKeys(t, wait, key(r.GUID, "attachment", "ATT-2"))
}

func TestLookupAttachment(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, err := e.store.Insert(ctx, sim.Msg{Chat: e.chat.GUID, Attachments: []sim.Attachment{{GUID: "ATT-3", Name: "notes.txt", MIME: "text/plain", UTI: "public.plain-text", Data: []byte("hello"), TransferState: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := chatdb.Open(e.path, chatdb.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	a, err := rd.LookupAttachment(ctx, "ATT-3")
	if err != nil {
		t.Fatal(err)
	}
	if a.Finished() || a.Name != "notes.txt" || a.MIME != "text/plain" || a.UTI != "public.plain-text" || a.MessageGUID != r.GUID ||
		a.ChatGUID != e.chat.GUID || a.Line != sim.DefaultLineNumber || a.Outgoing || !contains(a.Path, "~/Library/Messages/Attachments/") {
		t.Errorf("lookup %+v", a)
	}
	must(t, e.store.FinishTransfer(ctx, "ATT-3", []byte("hello")))
	if a, err = rd.LookupAttachment(ctx, "ATT-3"); err != nil || !a.Finished() || a.Size != 5 {
		t.Errorf("after the transfer: %+v %v", a, err)
	}
	if _, err := rd.LookupAttachment(ctx, "NO-SUCH"); !errors.Is(err, chatdb.ErrNotFound) {
		t.Errorf("unknown GUID: %v, want ErrNotFound", err)
	}
}
