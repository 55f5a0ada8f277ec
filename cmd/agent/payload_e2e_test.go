package main

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/sim"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// The adversarial run's poison pill (issue 8, item 2): a 22 MB attachment
// as inline data, or a 5 MB JPEG background, failed the agent's stream at
// its 4 MiB frame limit on every reconnect, and every other command for the
// agent stalled behind it. Through the operator API, relay, agent and the
// simulated Messages: both succeed, the file reaches chat.db whole, and a
// plain text submitted right behind them is not held up.
func TestLargePayloadsDoNotStallTheAgent(t *testing.T) {
	h := startE2E(t, simSetup{MaxAttachmentBytes: 100 << 20, Upload: &sim.UploadPlan{Duration: 200 * time.Millisecond, Steps: 2}})
	api := "http://" + h.relay.HTTPAddr() + "/v1/commands"
	post := func(body string) {
		t.Helper()
		resp, err := http.Post(api, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST: %d", resp.StatusCode)
		}
	}
	h.ok(cmd(e2ePeer, &linev1.SendText{Text: "hello"})) // the chat exists from here on
	big := append(bytes.Clone(pngBytes), bytes.Repeat([]byte{0x5a}, 22<<20)...)
	post(`{"id":"big-attachment","line":"` + e2eLine + `","chat_guid":"` + e2eChat + `","send_attachment":{"data":"` +
		base64.StdEncoding.EncodeToString(big) + `","file_name":"big.png"}}`)
	jpeg := append([]byte{0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0x00}, bytes.Repeat([]byte{0x11}, 5<<20)...)
	jpeg = append(jpeg, 0xff, 0xd9)
	post(`{"id":"big-background","line":"` + e2eLine + `","chat_guid":"` + e2eChat + `","set_background":{"data":"` +
		base64.StdEncoding.EncodeToString(jpeg) + `"}}`)
	// Another chat, so per-chat order does not hold it behind them.
	text := cmd("+15557654322", &linev1.SendText{Text: "right behind the big ones"})
	start := time.Now()
	h.submit(text)
	if v := h.final(text.Id, 20*time.Second); v.State != "succeeded" {
		t.Fatalf("text: %s %+v", v.State, v.Error)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("a plain text took %s behind the large payloads", took)
	}

	for _, id := range []string{"big-attachment", "big-background"} {
		if v := h.final(id, 60*time.Second); v.State != "succeeded" {
			t.Fatalf("%s: %s %+v", id, v.State, v.Error)
		}
	}
	var size int64
	if err := h.db.QueryRow(`SELECT total_bytes FROM attachment WHERE transfer_name = 'big.png'`).Scan(&size); err != nil || size != int64(len(big)) {
		t.Fatalf("attachment row: %d bytes, %v (want %d)", size, err, len(big))
	}
	if as := h.waitAgent(func(v relay.AgentView) bool { return v.Connected }); as.LastDisconnect != nil {
		t.Fatalf("the stream was cut: %+v", as.LastDisconnect)
	}
}
