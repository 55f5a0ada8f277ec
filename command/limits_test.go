package command

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

func TestCheckBounds(t *testing.T) {
	now := time.Now()
	text := func(s string) *linev1.Command {
		return &linev1.Command{Id: "a", Line: "+15550000001", Target: &linev1.Command_ChatGuid{ChatGuid: "iMessage;-;+15557654321"},
			Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: s}}}
	}
	if err := CheckBounds(text(strings.Repeat("x", MaxTextBytes)), now); err != nil {
		t.Fatalf("a text at the bound: %v", err)
	}
	bad := map[string]*linev1.Command{
		"text":     text(strings.Repeat("x", MaxTextBytes+1)),
		"not utf8": text("\xff\xfe"),
		"id":       {Id: strings.Repeat("i", MaxIDBytes+1), Line: "+15550000001", Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}},
		"chat":     {Id: "a", Line: "+15550000001", Target: &linev1.Command_ChatGuid{ChatGuid: strings.Repeat("g", MaxChatGUIDBytes+1)}, Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}},
		"handles": {Id: "a", Line: "+15550000001", Target: &linev1.Command_Participants{Participants: &linev1.Participants{Handles: make([]string, MaxRepeated+1)}},
			Kind: &linev1.Command_MarkRead{MarkRead: &linev1.MarkRead{}}},
		"subject":    {Id: "a", Line: "+15550000001", Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "x", Subject: strings.Repeat("s", MaxStringBytes+1)}}},
		"background": {Id: "a", Line: "+15550000001", Kind: &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{Source: &linev1.SetBackground_Data{Data: make([]byte, MaxBackgroundBytes+1)}}}},
		"deadline 2263": func() *linev1.Command {
			c := text("x")
			c.Deadline = timestamppb.New(time.Date(2263, 1, 1, 0, 0, 0, 0, time.UTC))
			return c
		}(),
		"deadline invalid": func() *linev1.Command {
			c := text("x")
			c.Deadline = &timestamppb.Timestamp{Seconds: 1, Nanos: -5}
			return c
		}(),
	}
	for name, c := range bad {
		err := CheckBounds(c, now)
		if err == nil || err.Code != linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if strings.Contains(err.Msg, "xxxxxxxx") || strings.Contains(err.Msg, "ggggggg") {
			t.Errorf("%s: the message repeats the value", name)
		}
	}
}
