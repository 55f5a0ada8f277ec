package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// kindOf is the name of the command's kind, as in its JSON.
func kindOf(cmd *linev1.Command) string {
	name := string(cmd.ProtoReflect().WhichOneof(cmd.ProtoReflect().Descriptor().Oneofs().ByName("kind")).Name())
	return name
}

func describe(cmd *linev1.Command) string {
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText:
		s := k.SendText.GetText()
		if e := k.SendText.GetEffect(); e != "" {
			s += " [effect " + e + "]"
		}
		return s
	case *linev1.Command_React:
		return k.React.GetTapback() + k.React.GetEmoji()
	case *linev1.Command_Edit:
		return k.Edit.GetText()
	case *linev1.Command_SetBackground:
		return fmt.Sprintf("%s, %d bytes", k.SetBackground.GetMimeType(), len(k.SetBackground.GetData()))
	case *linev1.Command_Typing:
		if k.Typing.GetOn() {
			return "on"
		}
		return "off"
	}
	return ""
}

// eventLine is one readable line for an event.
func eventLine(e *linev1.Event) string {
	who := func(fromMe bool, sender string) string {
		if fromMe {
			return "me"
		}
		return sender
	}
	switch p := e.GetPayload().(type) {
	case *linev1.Event_Message:
		s := fmt.Sprintf("message from %s: %q", who(p.Message.GetFromMe(), p.Message.GetSender()), p.Message.GetText())
		if p.Message.GetEffect() != "" {
			s += " [effect " + p.Message.GetEffect() + "]"
		}
		return s
	case *linev1.Event_Tapback:
		verb := "reacted"
		if p.Tapback.GetRemoved() {
			verb = "removed reaction"
		}
		return fmt.Sprintf("%s %s %s%s on %s", who(p.Tapback.GetFromMe(), p.Tapback.GetSender()), verb, p.Tapback.GetTapback(), p.Tapback.GetEmoji(), p.Tapback.GetTargetMessageGuid())
	case *linev1.Event_Edited:
		return fmt.Sprintf("edited %s to %q", e.GetMessageGuid(), p.Edited.GetText())
	case *linev1.Event_Unsent:
		return fmt.Sprintf("unsent %s", e.GetMessageGuid())
	case *linev1.Event_Delivered:
		return fmt.Sprintf("delivered %s", e.GetMessageGuid())
	case *linev1.Event_Read:
		return fmt.Sprintf("read %s", e.GetMessageGuid())
	case *linev1.Event_Sent:
		return fmt.Sprintf("sent %s", e.GetMessageGuid())
	case *linev1.Event_SendFailed:
		return fmt.Sprintf("send failed %s (error %d)", e.GetMessageGuid(), p.SendFailed.GetError())
	case *linev1.Event_Group:
		return fmt.Sprintf("group %s %s%s", strings.ToLower(strings.TrimPrefix(p.Group.GetAction().String(), "GROUP_ACTION_")), p.Group.GetHandle(), p.Group.GetName())
	case *linev1.Event_Typing:
		return fmt.Sprintf("%s typing=%v", p.Typing.GetSender(), p.Typing.GetOn())
	}
	return e.GetKey()
}

func unmarshalJSON(b []byte, m *linev1.Snapshot) error {
	if len(b) == 0 {
		return nil
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, m)
}

// demoPNG is a small generated image: a 64x64 gradient.
func demoPNG() ([]byte, error) {
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			img.Set(x, y, color.RGBA{R: uint8(x * 4), G: uint8(y * 4), B: 160, A: 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
