package agent

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A probed component looks in the background, every Every and at once on
// Recheck; reading it never runs the probe, even while a probe hangs, and
// a hanging probe is cut off at Timeout; Since moves only when the status
// does.
func TestProbedLooksInTheBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		var answer atomic.Value
		answer.Store(component.OK("fine"))
		hang := make(chan struct{})
		var hung atomic.Bool
		p := NewProbed(ProbedOptions{Name: component.Messages, Every: 15 * time.Second, Timeout: 2 * time.Second, Probe: func(ctx context.Context) component.Check {
			calls.Add(1)
			if hung.Load() {
				select {
				case <-hang:
				case <-ctx.Done():
					return component.Degraded("cut off", "wait")
				}
			}
			return answer.Load().(component.Check)
		}})
		start := time.Now()
		if c := p.Component(); c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || c.Detail != "not checked yet" || c.Name != component.Messages {
			t.Fatalf("before the first look: %v", c)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx)
		synctest.Wait()
		if c := p.Component(); c.Status != linev1.HealthStatus_HEALTH_STATUS_OK || c.Detail != "fine" || !c.Since.AsTime().Equal(start) {
			t.Fatalf("after the first look: %v", c)
		}
		for range 5 {
			p.Component()
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("reading the component ran the probe: %d calls", n)
		}
		time.Sleep(10 * time.Second)
		answer.Store(component.Down("gone", "open it"))
		time.Sleep(5 * time.Second)
		synctest.Wait()
		c := p.Component()
		if c.Status != linev1.HealthStatus_HEALTH_STATUS_DOWN || c.Detail != "gone; fix: open it" || !c.Since.AsTime().Equal(start.Add(15*time.Second)) {
			t.Fatalf("after 15 s: %v", c)
		}
		answer.Store(component.Down("still gone", "open it"))
		p.Recheck()
		synctest.Wait()
		if c := p.Component(); calls.Load() != 3 || c.Detail != "still gone; fix: open it" || !c.Since.AsTime().Equal(start.Add(15*time.Second)) {
			t.Fatalf("after Recheck (%d calls): %v", calls.Load(), c)
		}

		hung.Store(true)
		p.Recheck()
		synctest.Wait() // the probe now waits on hang or its deadline
		if c := p.Component(); c.Detail != "still gone; fix: open it" {
			t.Fatalf("while a look hangs: %v", c)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if c := p.Component(); c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || c.Detail != "cut off; fix: wait" {
			t.Fatalf("after the look's timeout: %v", c)
		}
		cancel()
		synctest.Wait()
	})
}

// A component carries its check's fix in Fix, for readers that must not
// parse it out of the detail, and still at the end of the detail, for
// readers that predate the field; an OK one has none. The disk and outbox
// components report the same way.
func TestComponentsCarryTheFix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var answer atomic.Value
		answer.Store(component.Down("gone", "open it"))
		p := NewProbed(ProbedOptions{Name: component.Messages, Every: time.Minute, Probe: func(context.Context) component.Check {
			return answer.Load().(component.Check)
		}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx)
		synctest.Wait()
		if c := p.Component(); c.GetFix() != "open it" || c.GetDetail() != "gone; fix: open it" {
			t.Fatalf("DOWN: detail %q fix %q", c.GetDetail(), c.GetFix())
		}
		answer.Store(component.OK("back"))
		p.Recheck()
		synctest.Wait()
		if c := p.Component(); c.GetFix() != "" || c.GetDetail() != "back" {
			t.Fatalf("OK: detail %q fix %q", c.GetDetail(), c.GetFix())
		}
		cancel()
		synctest.Wait()
	})
	d := &diskComponent{dir: "/data", lim: DiskLimits{MinFree: 1 << 30, DownFree: 100 << 20}, now: time.Now,
		stat: func(string) (DiskSpace, error) { return DiskSpace{Free: 50 << 20, Total: 1 << 40}, nil }}
	if hc := d.component(); hc.GetFix() == "" || !strings.HasSuffix(hc.GetDetail(), "; fix: "+hc.GetFix()) {
		t.Errorf("disk DOWN: detail %q fix %q", hc.GetDetail(), hc.GetFix())
	}
}

// A look that is not OK is followed by the next within Retry; once OK,
// the next comes only after Every.
func TestProbedRetriesSoonerWhenNotOK(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		p := NewProbed(ProbedOptions{Name: component.Automation, Every: 5 * time.Minute, Retry: 30 * time.Second, Probe: func(context.Context) component.Check {
			if calls.Add(1) == 1 {
				return component.Down("denied", "grant it")
			}
			return component.OK("granted")
		}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx)
		synctest.Wait()
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Fatalf("%d looks before Retry", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n, c := calls.Load(), p.Component(); n != 2 || c.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
			t.Fatalf("at Retry: %d looks, %v", n, c)
		}
		time.Sleep(4*time.Minute + 59*time.Second)
		synctest.Wait()
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d looks before Every", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := calls.Load(); n != 3 {
			t.Fatalf("%d looks at Every", n)
		}
		cancel()
		synctest.Wait()
	})
}

// The disk component judges free space against the thresholds: DOWN under
// DownFree, DEGRADED under MinFree or MinFreePercent, OK otherwise, with
// the fix whenever it is not OK; a failing statfs is DEGRADED.
func TestDiskComponent(t *testing.T) {
	lim := DiskLimits{MinFree: 1 << 30, MinFreePercent: 5, DownFree: 100 << 20}
	const tb = 1 << 40
	var space DiskSpace
	var statErr error
	now := time.Unix(1000, 0)
	d := &diskComponent{dir: "/data", lim: lim, now: func() time.Time { return now },
		stat: func(path string) (DiskSpace, error) {
			if path != "/data" {
				t.Errorf("statfs of %q", path)
			}
			return space, statErr
		}}
	for _, c := range []struct {
		free, total uint64
		err         error
		want        linev1.HealthStatus
		inDetail    string
	}{
		{free: 500 << 30, total: tb, want: linev1.HealthStatus_HEALTH_STATUS_OK, inDetail: "500GiB free of 1TiB"},
		{free: 40 << 30, total: tb, want: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, inDetail: "under 1GiB or 5%"},
		{free: 900 << 20, total: 10 << 30, want: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, inDetail: "900MiB free"},
		{free: 50 << 20, total: tb, want: linev1.HealthStatus_HEALTH_STATUS_DOWN, inDetail: "state.db writes will fail"},
		{err: errors.New("statfs: no such file"), want: linev1.HealthStatus_HEALTH_STATUS_DEGRADED, inDetail: "cannot read the free space"},
	} {
		space, statErr = DiskSpace{Free: c.free, Total: c.total}, c.err
		now = now.Add(time.Minute)
		hc := d.component()
		if hc.Name != component.Disk || hc.Status != c.want || !strings.Contains(hc.Detail, c.inDetail) {
			t.Errorf("free %d of %d: %v, want %v with %q", c.free, c.total, hc, c.want, c.inDetail)
		}
		if c.want != linev1.HealthStatus_HEALTH_STATUS_OK && !strings.Contains(hc.Detail, "fix:") {
			t.Errorf("%v without a fix: %s", c.want, hc.Detail)
		}
	}
	// Two DEGRADED in a row: Since is the first's.
	space, statErr = DiskSpace{Free: 900 << 20, Total: tb}, nil
	first := d.component().Since.AsTime()
	now = now.Add(time.Minute)
	if again := d.component().Since.AsTime(); !again.Equal(first) {
		t.Errorf("Since moved from %v to %v without a status change", first, again)
	}
	// The real statfs on this machine.
	c := CheckDisk(t.TempDir(), DiskLimits{}, nil)
	if c.Status != linev1.HealthStatus_HEALTH_STATUS_OK || !strings.Contains(c.Detail, "free of") {
		t.Errorf("real statfs: %+v", c)
	}
	if c := CheckDisk("/no/such/dir", DiskLimits{}, nil); c.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED {
		t.Errorf("missing dir: %+v", c)
	}
}

// Sizes and percentages read from the environment as people write them,
// and anything else is refused with a typed error naming the value.
func TestDiskSettings(t *testing.T) {
	for in, want := range map[string]ByteSize{"1GiB": 1 << 30, "100MiB": 100 << 20, "5000000": 5e6, "2 GB": 2e9, "1.5kib": 1536, "0": 0, "7b": 7} {
		var b ByteSize
		if err := b.Decode(in); err != nil || b != want {
			t.Errorf("%q: %d %v, want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1GiB", "1 parsec", "1e30TiB", "NaN"} {
		var b ByteSize
		if err := b.Decode(in); !errors.Is(err, ErrBadByteSize) || !strings.Contains(err.Error(), in) {
			t.Errorf("%q: %v, want ErrBadByteSize", in, err)
		}
	}
	if s := ByteSize(1536 << 20).String(); s != "1.5GiB" {
		t.Errorf("String %q", s)
	}
	var p Percent
	if err := p.Decode("7.5%"); err != nil || p != 7.5 {
		t.Errorf("7.5%%: %v %v", p, err)
	}
	for _, in := range []string{"101", "-1", "x"} {
		if err := p.Decode(in); !errors.Is(err, ErrBadPercent) {
			t.Errorf("%q: %v, want ErrBadPercent", in, err)
		}
	}
	t.Setenv("LINE_AGENT_DISK_MIN_FREE", "2GiB")
	cfg, err := LoadConfig()
	if err != nil || cfg.DiskMinFree != 2<<30 || cfg.DiskDownFree != 100<<20 || cfg.DiskMinFreePercent != 5 || cfg.OutboxLagMax != 2*time.Minute {
		t.Fatalf("config: %v %+v", err, cfg.DiskLimits())
	}
	t.Setenv("LINE_AGENT_DISK_DOWN_FREE", "lots")
	if _, err := LoadConfig(); !errors.Is(err, ErrBadByteSize) || !strings.Contains(err.Error(), "DISK_DOWN_FREE") {
		t.Fatalf("bad size: %v", err)
	}
}

// The outbox component: empty is OK; waiting events are OK while the
// stream is down (the relay component says so) and while the stream has
// been up for less than the limit (a replay); DEGRADED once an event has
// waited past the limit with the stream up; OK again once acked.
func TestOutboxLag(t *testing.T) {
	j, err := OpenJournal(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	clock := func() time.Time { return now }
	j.now = clock
	o := &outboxComponent{j: j, max: 2 * time.Minute, wall: clock, now: clock}
	status := func(up bool, since time.Time) *linev1.HealthComponent {
		t.Helper()
		hc := o.component(ctx, up, since)
		if hc.Name != component.Outbox {
			t.Fatalf("name %q", hc.Name)
		}
		return hc
	}
	if hc := status(true, t0); hc.Status != linev1.HealthStatus_HEALTH_STATUS_OK || !strings.Contains(hc.Detail, "no events") {
		t.Fatalf("empty: %v", hc)
	}
	if _, ok, err := j.OldestUnacked(ctx); ok || err != nil {
		t.Fatalf("OldestUnacked of an empty outbox: %v %v", ok, err)
	}
	if err := j.Commit(ctx, []*linev1.Event{{Key: "a"}, {Key: "b"}}, nil); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(10 * time.Minute)
	if err := j.Commit(ctx, []*linev1.Event{{Key: "c"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := j.OldestUnacked(ctx); !ok || err != nil || !got.Equal(t0) {
		t.Fatalf("OldestUnacked %v %v %v, want %v", got, ok, err, t0)
	}
	if hc := status(false, time.Time{}); hc.Status != linev1.HealthStatus_HEALTH_STATUS_OK || !strings.Contains(hc.Detail, "3 events") || !strings.Contains(hc.Detail, "stream is down") {
		t.Fatalf("stream down: %v", hc)
	}
	if hc := status(true, now.Add(-time.Minute)); hc.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("stream up for a minute (replaying): %v", hc)
	}
	hc := status(true, now.Add(-3*time.Minute))
	if hc.Status != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(hc.Detail, "not acknowledging") || !strings.Contains(hc.Detail, "3m0s of it") || !strings.Contains(hc.Detail, "fix:") || !hc.Since.AsTime().Equal(now) {
		t.Fatalf("stream up 3 minutes, events 10 minutes old: %v", hc)
	}
	if err := j.Ack(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if hc := status(true, now.Add(-3*time.Minute)); hc.Status != linev1.HealthStatus_HEALTH_STATUS_OK {
		t.Fatalf("after the ack: %v", hc)
	}
}
