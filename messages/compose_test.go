package messages

import (
	"context"
	"errors"
	"testing"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

type fixedDriver struct {
	name string
	caps []linev1.Capability
}

func (f fixedDriver) Capabilities() []linev1.Capability { return f.caps }
func (f fixedDriver) Execute(context.Context, *linev1.Command, func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	return &linev1.Snapshot{MessageGuid: f.name}, nil
}

func TestComposeRoutesByNeeds(t *testing.T) {
	helper := fixedDriver{"helper", nil} // disconnected: offers nothing
	script := fixedDriver{"applescript", []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}}
	d := Compose(&helper, script)
	plain := &linev1.Command{Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi"}}}
	if s, err := d.Execute(context.Background(), plain, nil); err != nil || s.MessageGuid != "applescript" {
		t.Fatalf("plain text: %v %v", s, err)
	}
	withEffect := &linev1.Command{Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi", Effect: "slam"}}}
	_, err := d.Execute(context.Background(), withEffect, nil)
	var e *command.Error
	if !errors.As(err, &e) || e.Code != linev1.ErrorCode_ERROR_CODE_UNSUPPORTED || e.Capability != linev1.Capability_CAPABILITY_EFFECT {
		t.Fatalf("effect without helper: %v, want UNSUPPORTED naming effect", err)
	}
	helper.caps = []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_EFFECT}
	if s, err := d.Execute(context.Background(), withEffect, nil); err != nil || s.MessageGuid != "helper" {
		t.Fatalf("effect with helper: %v %v", s, err)
	}
	if got := len(d.Capabilities()); got != 2 {
		t.Fatalf("capabilities %v, want the union of 2", d.Capabilities())
	}
}

// resumingDriver is a fixedDriver that can also resume.
type resumingDriver struct{ fixedDriver }

func (r resumingDriver) Resume(context.Context, *linev1.Command, []byte, func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	return &linev1.Snapshot{MessageGuid: "resumed by " + r.name}, nil
}

// Composing does not hide a driver's Resume: the composite resumes through
// the first driver that can, and says IN_DOUBT when none can.
func TestComposeResumes(t *testing.T) {
	bg := &linev1.Command{Kind: &linev1.Command_SetBackground{SetBackground: &linev1.SetBackground{}}}
	d := Compose(resumingDriver{fixedDriver{name: "helper"}}, fixedDriver{name: "applescript"})
	r, ok := d.(Resumable)
	if !ok {
		t.Fatal("the composite is not Resumable")
	}
	if s, err := r.Resume(context.Background(), bg, []byte("cp"), nil); err != nil || s.MessageGuid != "resumed by helper" {
		t.Fatalf("resume: %v %v", s, err)
	}
	_, err := Compose(fixedDriver{name: "applescript"}).(Resumable).Resume(context.Background(), bg, nil, nil)
	var e *command.Error
	if !errors.As(err, &e) || e.Code != linev1.ErrorCode_ERROR_CODE_IN_DOUBT {
		t.Fatalf("resume without a resumable driver: %v, want IN_DOUBT", err)
	}
}

// awayDriver is a helper driver whose helper is reconnecting: nothing now,
// effects once it is back.
type awayDriver struct{ fixedDriver }

func (awayDriver) Offered() []linev1.Capability {
	return []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT, linev1.Capability_CAPABILITY_EFFECT}
}

// While the helper is away, a command only it could run goes to it (it
// answers HELPER_UNAVAILABLE), not UNSUPPORTED; what another driver offers
// now still goes there; the composite offers the union.
func TestComposeHandsTheAwayHelperItsCommands(t *testing.T) {
	helper := awayDriver{fixedDriver{"helper", nil}}
	script := fixedDriver{"applescript", []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}}
	d := Compose(helper, script)
	withEffect := &linev1.Command{Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi", Effect: "slam"}}}
	if s, err := d.Execute(context.Background(), withEffect, nil); err != nil || s.MessageGuid != "helper" {
		t.Fatalf("effect while the helper is away: %v %v, want the helper's answer", s, err)
	}
	plain := &linev1.Command{Kind: &linev1.Command_SendText{SendText: &linev1.SendText{Text: "hi"}}}
	if s, err := d.Execute(context.Background(), plain, nil); err != nil || s.MessageGuid != "applescript" {
		t.Fatalf("plain text: %v %v, want AppleScript, which offers it now", s, err)
	}
	if got := Offered(d); len(got) != 2 {
		t.Fatalf("offered %v, want send_text and effect", got)
	}
}
