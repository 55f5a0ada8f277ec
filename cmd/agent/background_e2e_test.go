package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/messages/sim"
	"github.com/line-agent/line-agent/messages/simhelper"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

func setBackgroundCmd(chat string, sb *linev1.SetBackground) *linev1.Command {
	c := cmd(chat, nil)
	c.Kind = &linev1.Command_SetBackground{SetBackground: sb}
	return c
}

func bgBytes(data []byte, mimeType string) *linev1.SetBackground {
	return &linev1.SetBackground{Source: &linev1.SetBackground_Data{Data: data}, MimeType: mimeType}
}

// watch polls the operator view until the command is final, keeping every
// in-progress stage it saw and when the command turned final.
func (h *e2e) watch(id string, limit time.Duration) (*relay.CommandView, []string, time.Time) {
	h.t.Helper()
	var stages []string
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		v, err := h.relay.CommandView(id)
		if err != nil {
			continue
		}
		if v.State == "succeeded" || v.State == "failed" {
			return v, stages, time.Now()
		}
		if v.State == "in_progress" && v.Progress != nil && (len(stages) == 0 || stages[len(stages)-1] != v.Progress.Stage) {
			stages = append(stages, v.Progress.Stage)
		}
	}
	h.t.Fatalf("command %s not final in %v", id, limit)
	return nil, nil, time.Time{}
}

func (h *e2e) failedWith(c *linev1.Command, code string) *relay.ErrorView {
	h.t.Helper()
	h.submit(c)
	v := h.final(c.Id, 20*time.Second)
	if v.State != "failed" || v.Error == nil || v.Error.Code != code {
		h.t.Fatalf("%s: want failed %s, got %s %+v", c.Id, code, v.State, v.Error)
	}
	return v.Error
}

func (h *e2e) bgRows(action int) int {
	h.t.Helper()
	var n int
	if err := h.db.QueryRow(`SELECT count(*) FROM message WHERE item_type = 3 AND group_action_type = ?`, action).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func TestBackgroundEndToEnd(t *testing.T) {
	var store *simhelper.SimStore
	h := startE2E(t, simSetup{Upload: &sim.UploadPlan{Duration: 3 * time.Second, Steps: 6}, Store: func(s *simhelper.SimStore) { store = s },
		MaxImageBytes: 1024, FetchTimeout: 300 * time.Millisecond, BackgroundPoll: 100 * time.Millisecond})
	h.ok(cmd(e2ePeer, &linev1.SendText{Text: "hello"})) // the chat

	t.Run("acknowledged only once distributable", func(t *testing.T) {
		c := setBackgroundCmd(e2eChat, bgBytes(pngBytes, "image/png"))
		start := time.Now()
		h.submit(c)
		v, stages, at := h.watch(c.Id, 20*time.Second)
		if v.State != "succeeded" {
			t.Fatalf("%s %+v", v.State, v.Error)
		}
		if took := at.Sub(start); took < 3*time.Second {
			t.Fatalf("success after %v, before the 3 s upload was distributable", took)
		}
		if !strings.Contains(strings.Join(stages, ","), "uploading") {
			t.Fatalf("operator view showed stages %v, want uploading progress", stages)
		}
		s := &linev1.Snapshot{}
		if err := protojson.Unmarshal(v.Result, s); err != nil || s.GetAssetId() == "" || s.GetChatGuid() != e2eChat {
			t.Fatalf("result %s (%v)", v.Result, err)
		}
		if h.bgRows(4) != 1 || store.Uploads() != 1 {
			t.Fatalf("%d set rows, %d uploads", h.bgRows(4), store.Uploads())
		}
	})
	t.Run("stalled upload is not distributable at the deadline", func(t *testing.T) {
		store.SetUploadPlan(sim.UploadPlan{Duration: 400 * time.Millisecond, Stall: true})
		c := setBackgroundCmd(e2eChat, bgBytes(pngBytes, ""))
		c.Deadline = timestamppb.New(time.Now().Add(4 * time.Second))
		e := h.failedWith(c, "NOT_DISTRIBUTABLE")
		if !strings.HasPrefix(e.LastState, "uploading") {
			t.Fatalf("last state %q", e.LastState)
		}
	})
	t.Run("failed upload", func(t *testing.T) {
		store.SetUploadPlan(sim.UploadPlan{Duration: 200 * time.Millisecond, Fail: "iCloud storage is full"})
		e := h.failedWith(setBackgroundCmd(e2eChat, bgBytes(pngBytes, "image/png")), "NOT_DISTRIBUTABLE")
		if !strings.Contains(e.Message, "iCloud storage is full") || !strings.HasPrefix(e.LastState, "failed") {
			t.Fatalf("error %+v", e)
		}
	})
	t.Run("clear twice", func(t *testing.T) {
		for range 2 {
			c := cmd(e2eChat, nil)
			c.Kind = &linev1.Command_ClearBackground{ClearBackground: &linev1.ClearBackground{}}
			h.ok(c)
		}
		if n := h.bgRows(6); n != 1 {
			t.Fatalf("%d removal rows", n)
		}
	})
	t.Run("bad input is a typed error", func(t *testing.T) {
		uploads := store.Uploads()
		big := append(append([]byte(nil), pngBytes...), make([]byte, 2048)...)
		for name, sb := range map[string]*linev1.SetBackground{
			"not an image": bgBytes([]byte("hello, this is text"), ""),
			"gif":          bgBytes(append([]byte("GIF89a"), make([]byte, 32)...), "image/gif"),
			"lying mime":   bgBytes(pngBytes, "image/jpeg"),
			"over the cap": bgBytes(big, "image/png"),
			"url 404":      {Source: &linev1.SetBackground_Url{Url: h.files.URL + "/missing"}},
			"url trickles": {Source: &linev1.SetBackground_Url{Url: h.files.URL + "/hang"}},
		} {
			e := h.failedWith(setBackgroundCmd(e2eChat, sb), "INVALID_ARGUMENT")
			t.Logf("%s: %s", name, e.Message)
		}
		if store.Uploads() != uploads {
			t.Fatal("refused input was uploaded")
		}
	})
	t.Run("sms chat", func(t *testing.T) {
		chat, err := h.m.Store.EnsureChat(context.Background(), sim.ChatSpec{Service: "SMS", Participants: []string{"+15557770000"}})
		if err != nil {
			t.Fatal(err)
		}
		h.failedWith(setBackgroundCmd(chat.GUID, bgBytes(pngBytes, "image/png")), "INVALID_ARGUMENT")
	})
	t.Run("icloud health", func(t *testing.T) {
		h.waitAgent(func(v relay.AgentView) bool {
			if v.LastHealth == nil {
				return false
			}
			for _, c := range v.LastHealth.Components {
				if c.Name == "icloud" && c.Status == "OK" {
					return true
				}
			}
			return false
		})
	})
}

func TestBackgroundWithoutHelper(t *testing.T) {
	h := startE2E(t, simSetup{NoHelper: true})
	c := setBackgroundCmd(e2eChat, bgBytes(pngBytes, "image/png"))
	h.submit(c)
	v := h.final(c.Id, 20*time.Second)
	if v.State != "failed" || v.Error == nil || (v.Error.Code != "UNSUPPORTED" && v.Error.Code != "HELPER_UNAVAILABLE") {
		t.Fatalf("%s %+v", v.State, v.Error)
	}
}
