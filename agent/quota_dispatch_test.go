package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A send beyond the quota never reaches the driver: it is answered
// QUOTA_EXCEEDED with the time a slot frees, recorded (its redelivery
// hears the same), and a redelivered id that ran is never counted again.
func TestQuotaRefusalInTheDispatcherNeverReachesMessages(t *testing.T) {
	ctx := context.Background()
	clk := newTestClock()
	j := openTestJournal(t, t.TempDir())
	q := NewQuotas(j, QuotaOptions{Limits: QuotaLimits{Sends: 1}, Now: clk.now, Lines: []string{testLine}})
	drv := &countingDriver{}
	out := newFrames()
	d := NewDispatcher(ctx, DispatcherOptions{Driver: drv, Journal: j, Quotas: q, Emit: out.emit, Lines: []string{testLine}, Logger: testLogger(t)})

	d.Submit(ctx, testCommand("q-1"))
	if res := out.result(t, "q-1", 5*time.Second); res.GetSnapshot() == nil {
		t.Fatalf("the first send: %v", res)
	}
	d.Submit(ctx, testCommand("q-1")) // a redelivery: answered, not counted
	d.Submit(ctx, testCommand("q-2"))
	res := out.result(t, "q-2", 5*time.Second)
	e := res.GetError()
	if e.GetCode() != linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED || !e.GetRetryAt().AsTime().Equal(clk.now().Add(QuotaWindow)) || e.GetRetryAfter().AsDuration() != QuotaWindow {
		t.Fatalf("the second send: %v, want QUOTA_EXCEEDED with the slot freeing a window after the first", res)
	}
	if drv.count("q-1") != 1 || drv.count("q-2") != 0 {
		t.Fatalf("driver ran q-1 %d times and q-2 %d times; want 1 and 0", drv.count("q-1"), drv.count("q-2"))
	}
	if h := headroom(t, q); h.Sent != 1 {
		t.Fatalf("counted %d sends, want 1", h.Sent)
	}
	d.Drain()
	d.Wait()
	rec, err := j.Lookup(ctx, "q-2")
	if err != nil || rec == nil || rec.Result.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED {
		t.Fatalf("journal record of q-2: %+v, %v; want its QUOTA_EXCEEDED result", rec, err)
	}
}

// A command that certainly never reached Messages (its file could not be
// fetched) gives its slot back; one the driver ran keeps it, even failed.
func TestQuotaSlotReleasedOnlyWhenTheDriverNeverRan(t *testing.T) {
	ctx := context.Background()
	j := openTestJournal(t, t.TempDir())
	q := NewQuotas(j, QuotaOptions{Limits: QuotaLimits{Sends: 1}, Now: newTestClock().now})
	drv := &countingDriver{}
	out := newFrames()
	fetchFails := errors.New("blob gone")
	d := NewDispatcher(ctx, DispatcherOptions{Driver: drv, Journal: j, Quotas: q, Emit: out.emit, Lines: []string{testLine}, Logger: testLogger(t),
		Resolve: func(_ context.Context, cmd *linev1.Command) (*linev1.Command, error) {
			if cmd.GetId() == "unfetchable" {
				return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "fetch: %w", fetchFails)
			}
			return cmd, nil
		}})
	d.Submit(ctx, testCommand("unfetchable"))
	if res := out.result(t, "unfetchable", 5*time.Second); res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_UNAVAILABLE {
		t.Fatalf("unfetchable: %v", res)
	}
	d.Submit(ctx, testCommand("sent"))
	if res := out.result(t, "sent", 5*time.Second); res.GetSnapshot() == nil {
		t.Fatalf("the slot was not given back: %v", res)
	}
	d.Submit(ctx, testCommand("over"))
	if res := out.result(t, "over", 5*time.Second); res.GetError().GetCode() != linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED {
		t.Fatalf("over the limit: %v", res)
	}
	if drv.count("unfetchable") != 0 || drv.count("over") != 0 {
		t.Fatal("a refused or unfetched command reached the driver")
	}
	d.Drain()
	d.Wait()
}
