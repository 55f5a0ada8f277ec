package applescript

import (
	"context"
	"testing"

	"github.com/line-agent/line-agent/messages/sim"
)

// A chat GUID naming an email in another case is the chat Messages has
// under the lower-case address (issue 8 item 10): the script addresses
// that one.
func TestChatGUIDEmailCase(t *testing.T) {
	h := newHarness(t, nil, nil)
	const canon = "iMessage;-;carol@example.com"
	if _, err := h.store.EnsureChat(context.Background(), sim.ChatSpec{GUID: canon}); err != nil {
		t.Fatal(err)
	}
	snap, err := h.exec(textTo("iMessage;-;Carol@Example.COM", "hi carol"))
	if err != nil {
		t.Fatal(err)
	}
	if snap.GetChatGuid() != canon || !snap.GetSent() {
		t.Fatalf("snapshot %v", snap)
	}
	if recs := h.records(); len(recs) != 1 || recs[0].Script != scriptTextToChat || recs[0].Argv[1] != canon {
		t.Fatalf("runs %+v", recs)
	}
}
