package agent

import (
	"context"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// awayHelper is a driver whose private-API helper is reconnecting: it
// offers nothing now, sends text once its helper is back, and answers
// what the bridge answers meanwhile.
type awayHelper struct{ countingDriver }

func (*awayHelper) Capabilities() []linev1.Capability { return nil }
func (*awayHelper) Offered() []linev1.Capability {
	return []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT}
}
func (*awayHelper) Execute(context.Context, *linev1.Command, func(*linev1.CommandUpdate)) (*linev1.Snapshot, error) {
	return nil, &command.Error{Code: linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE, Msg: "no helper is connected", LastState: "not_sent_to_helper"}
}

// A command arriving while the helper reconnects is the driver's to
// answer (HELPER_UNAVAILABLE, nothing sent, retryable), not UNSUPPORTED,
// which would tell the caller this Mac cannot send text at all. A kind
// the driver never offers is still UNSUPPORTED at the first door.
func TestHelperAwayIsNotUnsupported(t *testing.T) {
	ctx := context.Background()
	j := openTestJournal(t, t.TempDir())
	out := newFrames()
	d := NewDispatcher(ctx, DispatcherOptions{Driver: &awayHelper{}, Journal: j, Emit: out.emit, Lines: []string{testLine}, Logger: testLogger(t)})
	d.Submit(ctx, testCommand("away-1"))
	if e := out.result(t, "away-1", 5*time.Second).GetError(); e.GetCode() != linev1.ErrorCode_ERROR_CODE_HELPER_UNAVAILABLE || e.GetLastState() != "not_sent_to_helper" {
		t.Fatalf("a send while the helper reconnects: %v, want HELPER_UNAVAILABLE not_sent_to_helper", e)
	}
	typing := testCommand("away-2")
	typing.Kind = &linev1.Command_Typing{Typing: &linev1.Typing{On: true}}
	if e := out.result(t, submit(ctx, d, typing), 5*time.Second).GetError(); e.GetCode() != linev1.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("a kind never offered: %v, want UNSUPPORTED", e)
	}
	d.Drain()
	d.Wait()
}

func submit(ctx context.Context, d *Dispatcher, c *linev1.Command) string {
	d.Submit(ctx, c)
	return c.GetId()
}
