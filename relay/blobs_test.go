package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// fetchAll reads a blob with the agent's token.
func (a *testAgent) fetchAll(commandID, blobID string) ([]byte, error) {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+a.token)
	st, err := a.client.FetchBlob(ctx, &linev1.FetchBlobRequest{CommandId: commandID, BlobId: blobID})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		c, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		buf.Write(c.GetData())
	}
}

// The adversarial run's poison pill: 22 MB of inline data failed the
// agent's stream at its 4 MiB frame limit on every reconnect. Now the data
// never rides in a frame: the command carries a BlobRef the agent fetches,
// and a plain text behind it is dispatched at once.
func TestLargeDataTravelsAsABlob(t *testing.T) {
	srv := startRelay(t, "", Options{})
	a := enrollAgent(t, srv, "+15550000001")
	other := enrollAgent(t, srv, "+15550000002")
	a.connect()
	other.connect()

	data := bytes.Repeat([]byte("0123456789abcdef"), 22<<20/16) // 22 MiB
	body := `{"id":"big","line":"+15550000001","chat_guid":"iMessage;-;+15557654321","send_attachment":{"data":"` +
		base64.StdEncoding.EncodeToString(data) + `","file_name":"big.bin"}}`
	if code, b := postCommand(t, srv, body); code != http.StatusAccepted {
		t.Fatalf("POST: %d %v", code, b)
	}
	postCommand(t, srv, sendText("small", "+15550000001"))
	got := a.nextCommand()
	ref := got.GetSendAttachment().GetBlob()
	sum := sha256.Sum256(data)
	if got.GetId() != "big" || ref == nil || ref.GetSize() != uint64(len(data)) || ref.GetSha256() != hex.EncodeToString(sum[:]) || len(got.GetSendAttachment().GetData()) != 0 {
		t.Fatalf("command %s: ref %v, inline %d bytes", got.GetId(), ref, len(got.GetSendAttachment().GetData()))
	}
	if next := a.nextCommand().GetId(); next != "small" {
		t.Fatalf("after the big command got %q", next)
	}
	fetched, err := a.fetchAll("big", ref.GetId())
	if err != nil || !bytes.Equal(fetched, data) {
		t.Fatalf("FetchBlob: %d bytes, %v", len(fetched), err)
	}
	// Only the agent the command went to may read it.
	if _, err := other.fetchAll("big", ref.GetId()); status.Code(err) != codes.NotFound {
		t.Fatalf("another agent's fetch: %v", err)
	}
	if _, err := a.fetchAll("small", ref.GetId()); status.Code(err) != codes.NotFound {
		t.Fatalf("fetch under another command: %v", err)
	}
	// A finished command's blob is gone.
	a.succeed("big", "g-big")
	waitState(t, srv, "big", "succeeded")
	if _, err := a.fetchAll("big", ref.GetId()); status.Code(err) != codes.NotFound {
		t.Fatalf("fetch after the result: %v", err)
	}
	var n int
	if err := srv.store.db.QueryRow(`SELECT count(*) FROM blob_chunks`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d chunks left, %v", n, err)
	}
}

// Over the documented caps (100 MB attachments, 10 MB backgrounds) is
// refused at submit.
func TestDataOverTheCapsIsRefusedAtSubmit(t *testing.T) {
	srv := startRelay(t, "", Options{})
	enrollAgent(t, srv, "+15550000001")
	_, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "bg", Line: "+15550000001",
		Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"},
		Kind:   &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{Source: &linev1.SetBackground_Data{Data: make([]byte, 10<<20+1)}}}})
	var me *command.Error
	if !errors.As(err, &me) || me.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("11 MB background: %v", err)
	}
	// A relay-made BlobRef cannot be forged by a client: it names no
	// stored blob, and nothing the client sends is fetched on its behalf.
	if _, err := srv.SubmitCommand(context.Background(), &linev1.Command{Id: "forged", Line: "+15550000001",
		Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"},
		Kind:   &linev1.Command_SendAttachment{SendAttachment: &linev1.SendAttachment{Source: &linev1.SendAttachment_Blob{Blob: &linev1.BlobRef{Id: "blob_x", Size: 1}}}}}); !errors.As(err, &me) || me.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
		t.Fatalf("client-made BlobRef: %v", err)
	}
}

// TestBlobKindsAreTheKindsWithABlob: finishing a command deletes its blob
// chunks only for blobKinds, so a kind that can carry a BlobRef and is
// missing there would leave its chunks in the store for ever. Read from
// the protocol, not from a second list: every kind of Command whose
// message has a BlobRef field must be in blobKinds, and no other.
func TestBlobKindsAreTheKindsWithABlob(t *testing.T) {
	blobRef := (&linev1.BlobRef{}).ProtoReflect().Descriptor().FullName()
	cmd := (&linev1.Command{}).ProtoReflect()
	kinds := cmd.Descriptor().Oneofs().ByName("kind").Fields()
	want := map[string]bool{}
	for i := range kinds.Len() {
		f := kinds.Get(i)
		if f.Message() == nil {
			continue
		}
		fields := f.Message().Fields()
		for k := range fields.Len() {
			if m := fields.Get(k).Message(); m != nil && m.FullName() == blobRef {
				c := &linev1.Command{}
				c.ProtoReflect().Set(f, c.ProtoReflect().NewField(f))
				want[command.KindName(c)] = true
			}
		}
	}
	if len(want) == 0 || !maps.Equal(want, blobKinds) {
		t.Fatalf("kinds with a BlobRef field: %v; blobKinds: %v", want, blobKinds)
	}
}
