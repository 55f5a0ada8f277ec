package messagesrestart

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/messages/applescript"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// clock is a hand-moved clock for the bound.
type clock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// messagesApp plays Messages for the Actions: whether it runs, whether
// it quits when asked and dies when killed, and every call.
type messagesApp struct {
	mu                    sync.Mutex
	running               bool     // guarded by mu
	ignoresQuit, survives bool     // guarded by mu
	openErr               error    // guarded by mu
	noStart               bool     // guarded by mu
	calls                 []string // guarded by mu
}

func (m *messagesApp) Running(context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running, nil
}

func (m *messagesApp) Quit(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "quit")
	if !m.ignoresQuit {
		m.running = false
	}
	return nil
}

func (m *messagesApp) Kill(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "kill")
	if !m.survives {
		m.running = false
	}
	return nil
}

func (m *messagesApp) Open(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "open")
	if m.openErr != nil {
		return m.openErr
	}
	m.running = !m.noStart
	return nil
}

func (m *messagesApp) got() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

func (m *messagesApp) opens() int {
	n := 0
	for _, c := range m.got() {
		if c == "open" {
			n++
		}
	}
	return n
}

// timeouts plays n osascript runs of sends that time out, d apart.
func timeouts(r *Restarter, c *clock, n int, d time.Duration) {
	for range n {
		c.advance(d)
		r.OsascriptStarted()
		r.OsascriptEnded(applescript.RunTimedOut)
	}
}

func answered(r *Restarter) {
	r.OsascriptStarted()
	r.OsascriptEnded(applescript.RunAnswered)
}

var running = &linev1.HealthComponent{Name: "messages", Status: linev1.HealthStatus_HEALTH_STATUS_OK,
	Detail: "Messages is running (pid 412)", Since: timestamppb.New(time.Unix(1e9, 0))}

func newBound(t *testing.T, app *messagesApp, o Options) (*Restarter, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	o.Actions, o.Now = app, c.now
	if o.PerHour == 0 {
		o.PerHour = 3
	}
	o.Step = time.Millisecond
	return New(o), c
}

func wantComponent(t *testing.T, r *Restarter, status linev1.HealthStatus, says ...string) {
	t.Helper()
	c := r.Component(running)
	if c.GetStatus() != status {
		t.Fatalf("status %v, want %v: %s", c.GetStatus(), status, c.GetDetail())
	}
	for _, s := range says {
		if !strings.Contains(c.GetDetail(), s) {
			t.Fatalf("detail %q lacks %q", c.GetDetail(), s)
		}
	}
}

// Three timeouts in a row within the window restart Messages; fewer, an
// answer between them, or three spread wider than the window do not.
func TestSignals(t *testing.T) {
	app := &messagesApp{running: true}
	r, c := newBound(t, app, Options{})
	ctx := context.Background()
	timeouts(r, c, 2, time.Minute)
	answered(r)
	timeouts(r, c, 2, time.Minute)
	r.tick(ctx)
	timeouts(r, c, 1, 4*time.Minute)
	timeouts(r, c, 1, 4*time.Minute) // 1 + 2 more in a row, but spread over 8 minutes
	r.tick(ctx)
	if n := app.opens(); n != 0 {
		t.Fatalf("restarted on %v", app.got())
	}
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_OK, "Messages is running")
	answered(r)
	timeouts(r, c, 3, 30*time.Second)
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_DEGRADED, "3 osascript runs in a row timed out", "restarting it")
	r.tick(ctx)
	if got := app.got(); !slices.Equal(got, []string{"quit", "open"}) {
		t.Fatalf("restart did %v", got)
	}
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_OK, "Messages restarted once in the last hour, the last at 2026-03-01T09:13:30Z because 3 osascript runs in a row timed out, the last at 2026-03-01T09:13:30Z",
		"quit and reopened, running again 0s later")
}

// At most one restart every MinInterval and PerHour an hour: past the
// bound Messages is left alone and the component is DOWN saying so, with
// when the next restart may come; an answer ends the hang.
func TestBound(t *testing.T) {
	app := &messagesApp{running: true}
	r, c := newBound(t, app, Options{PerHour: 3, MinInterval: 10 * time.Minute})
	ctx := context.Background()
	start := c.now()
	hangAndTick := func() {
		timeouts(r, c, 3, time.Second)
		r.tick(ctx)
	}
	hangAndTick() // 1st, at +3s
	c.advance(5 * time.Minute)
	hangAndTick()
	if n := app.opens(); n != 1 {
		t.Fatalf("restarted within MinInterval: %d", n)
	}
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_DOWN, "automatic restarts are spent (1 in the last hour, at most 3 an hour and one every 10m0s)",
		"the next is allowed at 2026-03-01T09:10:03Z", "fix: restart the Mac", "Console")
	c.t = start.Add(10*time.Minute + 3*time.Second) // the hang still holds: nothing answered
	r.tick(ctx)
	if n := app.opens(); n != 2 {
		t.Fatalf("no 2nd restart once allowed: %d", n)
	}
	c.advance(10 * time.Minute)
	hangAndTick() // 3rd, at +20m6s
	c.advance(15 * time.Minute)
	hangAndTick()
	if n := app.opens(); n != 3 {
		t.Fatalf("a 4th restart within the hour: %d", n)
	}
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_DOWN, "3 in the last hour", "the next is allowed at 2026-03-01T10:00:03Z",
		"Messages restarted 3 times in the last hour")
	// Messages answers by itself: no longer hanging, no restart.
	answered(r)
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_OK)
	c.t = start.Add(time.Hour + 3*time.Second)
	r.tick(ctx)
	if n := app.opens(); n != 3 {
		t.Fatalf("restarted a Messages that answers: %d", n)
	}
	hangAndTick()
	if n := app.opens(); n != 4 {
		t.Fatalf("the hour passed but no restart: %d", n)
	}
}

// PerHour 0 never restarts; the hang is still reported, DOWN.
func TestRestartsOff(t *testing.T) {
	app := &messagesApp{running: true}
	r, c := newBound(t, app, Options{PerHour: -1})
	timeouts(r, c, 3, time.Second)
	r.tick(context.Background())
	if got := app.got(); len(got) != 0 {
		t.Fatalf("restarts are off but it did %v", got)
	}
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_DOWN, "automatic restarts are off (LINE_AGENT_MESSAGES_RESTARTS_PER_HOUR=0)", "fix: quit and reopen Messages")
}

// The helper's unanswered count is the other signal: a rise to 3
// restarts; after the restart the same count is old news; an answer
// (the count falls) starts over.
func TestHelperSignal(t *testing.T) {
	app := &messagesApp{running: true}
	var n atomic.Int64
	r, c := newBound(t, app, Options{Unanswered: n.Load})
	ctx := context.Background()
	n.Store(2)
	r.tick(ctx)
	c.advance(20 * time.Second)
	n.Store(3)
	r.tick(ctx)
	if got := app.opens(); got != 1 {
		t.Fatalf("opens %d after 3 unanswered", got)
	}
	c.advance(11 * time.Minute)
	r.tick(ctx)
	if got := app.opens(); got != 1 {
		t.Fatalf("restarted again on the same count: %d", got)
	}
	n.Store(0)
	r.tick(ctx)
	n.Store(3)
	r.tick(ctx)
	if got := app.opens(); got != 2 {
		t.Fatalf("a new streak of 3 did not restart: %d", got)
	}
	wantComponent(t, r, linev1.HealthStatus_HEALTH_STATUS_OK, "because 3 private-API helper requests in a row went unanswered")
}

// A restart waits for the osascript runs in flight: nothing is done to
// Messages while one runs; if it then answers, no restart at all; past
// IdleWait it goes ahead anyway.
func TestWaitsForRunsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(*Restarter)
		want []string
	}{
		{"the run times out too", func(r *Restarter) { r.OsascriptEnded(applescript.RunTimedOut) }, []string{"quit", "open"}},
		{"the run is answered", func(r *Restarter) { r.OsascriptEnded(applescript.RunAnswered) }, nil},
		{"the run outlasts IdleWait", func(*Restarter) { time.Sleep(2 * time.Minute) }, []string{"quit", "open"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				app := &messagesApp{running: true}
				r := New(Options{Actions: app, PerHour: 3, IdleWait: time.Minute})
				r.OsascriptStarted() // a send mid-run
				for range 3 {
					r.OsascriptStarted()
					r.OsascriptEnded(applescript.RunTimedOut)
				}
				done := make(chan struct{})
				go func() { r.tick(context.Background()); close(done) }()
				synctest.Wait()
				if got := app.got(); len(got) != 0 {
					t.Fatalf("acted on Messages with a run in flight: %v", got)
				}
				if c := r.Component(running); c.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DEGRADED || !strings.Contains(c.GetDetail(), "restarting Messages") {
					t.Fatalf("while waiting: %v", c)
				}
				tc.end(r)
				<-done
				if got := app.got(); !slices.Equal(got, tc.want) {
					t.Fatalf("did %v, want %v", got, tc.want)
				}
			})
		})
	}
}

// A Messages that will not quit is killed after QuitWait; each way a
// restart fails is said in the detail, and counts against the bound.
func TestRestartSequence(t *testing.T) {
	for _, tc := range []struct {
		name  string
		app   *messagesApp
		calls []string
		says  string
	}{
		{"quits", &messagesApp{running: true}, []string{"quit", "open"}, "quit and reopened, running again"},
		{"ignores quit", &messagesApp{running: true, ignoresQuit: true}, []string{"quit", "kill", "open"}, "killed (it did not quit within 10s) and reopened, running again 10s later"},
		{"survives the kill", &messagesApp{running: true, ignoresQuit: true, survives: true}, []string{"quit", "kill"}, "was still running 10s after it was killed"},
		{"not running", &messagesApp{}, []string{"open"}, "reopened, running again"},
		{"open fails", &messagesApp{running: true, openErr: errors.New("LSOpenURLsWithRole() failed")}, []string{"quit", "open"}, "opening Messages again failed: LSOpenURLsWithRole() failed"},
		{"never comes back", &messagesApp{running: true, noStart: true}, []string{"quit", "open"}, "Messages was not running 30s later"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rechecked := 0
				var reports []Restart
				r := New(Options{Actions: tc.app, PerHour: 3, Restarted: func() { rechecked++ }, Report: func(x Restart) { reports = append(reports, x) }})
				for range 3 {
					r.OsascriptStarted()
					r.OsascriptEnded(applescript.RunTimedOut)
				}
				r.tick(context.Background())
				if got := tc.app.got(); !slices.Equal(got, tc.calls) {
					t.Fatalf("did %v, want %v", got, tc.calls)
				}
				if c := r.Component(running); !strings.Contains(c.GetDetail(), tc.says) || rechecked != 1 {
					t.Fatalf("detail %q lacks %q (rechecked %d)", c.GetDetail(), tc.says, rechecked)
				}
				wantRunning := strings.Contains(tc.says, "running again")
				if len(reports) != 1 || !strings.Contains(reports[0].Outcome, tc.says) || reports[0].Running != wantRunning ||
					!strings.Contains(reports[0].Reason, "osascript runs in a row timed out") || reports[0].At.IsZero() {
					t.Fatalf("reported %+v; want one restart saying %q, running %v", reports, tc.says, wantRunning)
				}
			})
		})
	}
}

// Run restarts from its own loop, kicked by the signal, and stops with
// its context.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		app := &messagesApp{running: true}
		r := New(Options{Actions: app, PerHour: 3})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()
		for range 3 {
			r.OsascriptStarted()
			r.OsascriptEnded(applescript.RunTimedOut)
		}
		synctest.Wait()
		if got := app.got(); !slices.Equal(got, []string{"quit", "open"}) {
			t.Fatalf("did %v", got)
		}
		cancel()
		<-done
	})
}

// The component the Restarter reports carries every fix in Fix, its own
// first (its detail comes first), and its detail says each detail, then
// "; fix: " once and those fixes: a reader cutting at "; fix: " (an older
// doctor) and one taking Fix see the same fix. With nothing to add the
// probe's component comes through as it was.
func TestComponentCarriesBothFixes(t *testing.T) {
	const restarterFix = "quit and reopen Messages; restart the Mac; if Messages keeps hanging, look at what it logs in Console (Applications > Utilities > Console, search Messages and imagent)"
	probe := component.Degraded("cannot list processes to find Messages: exit status 1", "check LINE_AGENT_PS (default /bin/ps)")
	base := &linev1.HealthComponent{Name: "messages", Status: probe.Status, Detail: probe.Text(), Fix: probe.Fix, Since: timestamppb.New(time.Unix(1e9, 0))}

	app := &messagesApp{running: true}
	r, c := newBound(t, app, Options{PerHour: -1})
	if got := r.Component(base); !proto.Equal(got, base) {
		t.Fatalf("nothing to add, yet %v; want %v", got, base)
	}
	timeouts(r, c, 3, time.Second)
	got := r.Component(base)
	hang := "Messages is hanging (3 osascript runs in a row timed out, the last at 2026-03-01T09:00:03Z) and automatic restarts are off (LINE_AGENT_MESSAGES_RESTARTS_PER_HOUR=0)"
	wantFix := restarterFix + "; then " + probe.Fix
	if got.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || got.GetFix() != wantFix ||
		got.GetDetail() != hang+"; "+probe.Detail+"; fix: "+wantFix {
		t.Fatalf("hanging, the probe DEGRADED: %s %q fix %q; want DOWN, fix %q", got.GetStatus(), got.GetDetail(), got.GetFix(), wantFix)
	}
	if n := strings.Count(got.GetDetail(), "; fix: "); n != 1 {
		t.Errorf("the detail says \"; fix: \" %d times: %q", n, got.GetDetail())
	}
	// The probe sees nothing wrong: the Restarter's fix alone.
	if got := r.Component(running); got.GetFix() != restarterFix || got.GetDetail() != hang+"; "+running.GetDetail()+"; fix: "+restarterFix {
		t.Fatalf("hanging, Messages running: %q fix %q", got.GetDetail(), got.GetFix())
	}
}

// After a restart the hour's note joins the detail before the fix, so the
// detail still ends with "; fix: " and Fix.
func TestComponentRestartNoteBeforeTheFix(t *testing.T) {
	probe := component.Degraded("cannot list processes to find Messages: exit status 1", "check LINE_AGENT_PS (default /bin/ps)")
	base := &linev1.HealthComponent{Name: "messages", Status: probe.Status, Detail: probe.Text(), Fix: probe.Fix}
	app := &messagesApp{running: true}
	r, c := newBound(t, app, Options{})
	timeouts(r, c, 3, time.Second)
	r.tick(context.Background())
	if n := app.opens(); n != 1 {
		t.Fatalf("no restart: %v", app.got())
	}
	got := r.Component(base)
	want := probe.Detail + "; Messages restarted once in the last hour, the last at 2026-03-01T09:00:03Z because 3 osascript runs in a row timed out, the last at 2026-03-01T09:00:03Z: quit and reopened, running again 0s later; fix: " + probe.Fix
	if got.GetDetail() != want || got.GetFix() != probe.Fix {
		t.Fatalf("after a restart: %q fix %q; want %q fix %q", got.GetDetail(), got.GetFix(), want, probe.Fix)
	}
}
