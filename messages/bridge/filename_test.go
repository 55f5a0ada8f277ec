package bridge_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A file name of more than 200 bytes of multibyte characters goes through
// the bridge to the simulated helper and into chat.db: shortened on a
// character boundary with its extension, not cut mid-character into a path
// the helper cannot find (issue 8 item 12).
func TestSendAttachmentWithLongMultibyteName(t *testing.T) {
	e := startBackground(t, sim.UploadPlan{})
	d := e.confirmed()
	for _, name := range []string{strings.Repeat("é", 150) + ".jpg", strings.Repeat("é", 150) + ".jpeg", strings.Repeat("😀", 150) + ".jpeg", "x" + strings.Repeat("😀", 150) + ".jpg"} {
		ext := name[strings.LastIndexByte(name, '.'):]
		cmd := with(onChat(bgChat), func(c *linev1.Command) {
			c.Kind = &linev1.Command_SendAttachment{SendAttachment: &linev1.SendAttachment{
				Source: &linev1.SendAttachment_Data{Data: []byte("\xff\xd8\xff\xe0 not really a jpeg")}, FileName: name, MimeType: "image/jpeg"}}
		})
		snap, err := d.Execute(ctx(t), cmd, nil)
		if err != nil {
			t.Fatalf("%.8q...%s: %v", name, ext, err)
		}
		var got string
		if err := e.db.QueryRow(`SELECT a.transfer_name FROM attachment a JOIN message_attachment_join j ON j.attachment_id = a.ROWID
			JOIN message m ON m.ROWID = j.message_id WHERE m.guid = ?`, snap.GetMessageGuid()).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !utf8.ValidString(got) || len(got) > 200 || len(got) < 197 || !strings.HasSuffix(got, ext) || !strings.HasSuffix(name, got) {
			t.Errorf("%.8q...%s: sent as %q (%d bytes)", name, ext, got, len(got))
		}
	}
}
