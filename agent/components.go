package agent

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Probe looks once at one thing on the Mac (a process, a permission, an
// account), within ctx's deadline. It may run a program: it is never
// called on the health call's path, only by a Probed's loop.
type Probe func(ctx context.Context) component.Check

// ProbedOptions configures a Probed.
type ProbedOptions struct {
	// Name is the component's name (package component).
	Name string
	// Probe is what is looked at.
	Probe Probe
	// Every is how often it is looked at again; the result is kept in
	// between. Required.
	Every time.Duration
	// Retry, when set, is how soon a look that was not OK is followed by
	// the next: a permission granted or an app opened shows within Retry,
	// while a healthy Mac is asked only every Every.
	Retry time.Duration
	// Timeout bounds one look; past it the look's context ends (a probe
	// running a program kills it) and the probe reports what it saw.
	// Default Every, capped at 30 s.
	Timeout time.Duration
	// Now dates Since; default time.Now.
	Now func() time.Time
}

// Probed is a health component whose probe runs in the background, every
// Every or sooner when Recheck asks, so that a health check (the relay's,
// the status socket's) only reads what was last seen and stays fast
// however slow the Mac is to answer.
type Probed struct {
	o    ProbedOptions
	kick chan struct{}

	mu sync.Mutex
	// st is the last check and since when its status holds; guarded by mu.
	st sinceTracker
}

// NewProbed returns a Probed that has not looked yet: until its first
// look it reports DEGRADED "not checked yet". Run makes it look.
func NewProbed(o ProbedOptions) *Probed {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout <= 0 {
		o.Timeout = min(o.Every, 30*time.Second)
	}
	p := &Probed{o: o, kick: make(chan struct{}, 1)}
	p.st.set(component.Degraded("not checked yet", ""), o.Now())
	return p
}

// Run looks now, then every Every (Retry after a look that was not OK)
// and at each Recheck, until ctx ends.
func (p *Probed) Run(ctx context.Context) {
	t := time.NewTimer(p.o.Every)
	defer t.Stop()
	for {
		next := p.o.Every
		if c := p.look(ctx); c.Status != linev1.HealthStatus_HEALTH_STATUS_OK && p.o.Retry > 0 {
			next = p.o.Retry
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

// Recheck asks for a look now (it returns at once): something outside the
// probe saw what it checks change, such as a send refused for the
// permission the probe looks at.
func (p *Probed) Recheck() {
	select {
	case p.kick <- struct{}{}:
	default: // one look is already asked for
	}
}

func (p *Probed) look(ctx context.Context) component.Check {
	lctx, cancel := context.WithTimeout(ctx, p.o.Timeout)
	c := p.o.Probe(lctx)
	cancel()
	if ctx.Err() != nil {
		return c // stopping: what a cut-short look saw is not the Mac's state
	}
	p.mu.Lock()
	p.st.set(c, p.o.Now())
	p.mu.Unlock()
	return c
}

// Component is the last look as a HealthComponent.
func (p *Probed) Component() *linev1.HealthComponent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st.component(p.o.Name)
}

// sinceTracker keeps a component's current check and since when its status
// has been what it is. Its owner guards it.
type sinceTracker struct {
	cur   component.Check
	since time.Time
}

func (s *sinceTracker) set(c component.Check, now time.Time) {
	if c.Status != s.cur.Status || s.since.IsZero() {
		s.since = now
	}
	s.cur = c
}

// component is the current check as a HealthComponent. The fix goes in
// its own field for readers that must tell it from the detail (doctor),
// and stays in the detail (Text) for those that predate the field.
func (s *sinceTracker) component(name string) *linev1.HealthComponent {
	return &linev1.HealthComponent{Name: name, Status: s.cur.Status, Detail: s.cur.Text(), Fix: s.cur.Fix, Since: timestamppb.New(s.since)}
}

// ownComponents are the agent's components that need no backend: the disk
// under the data directory and the outbox's lag.
type ownComponents struct {
	disk   *diskComponent
	outbox *outboxComponent
}

func newOwnComponents(cfg Config, j *Journal) *ownComponents {
	lagMax := cfg.OutboxLagMax
	if lagMax <= 0 {
		lagMax = 2 * time.Minute
	}
	return &ownComponents{
		disk:   &diskComponent{dir: cfg.DataDir, lim: cfg.DiskLimits(), now: time.Now},
		outbox: &outboxComponent{j: j, max: lagMax, wall: j.now, now: time.Now},
	}
}

// list reports them; sess (nil before the session exists) tells the
// outbox whether the stream is up. A nil ownComponents (an Agent built
// without New) has none.
func (o *ownComponents) list(sess *Session) []*linev1.HealthComponent {
	if o == nil {
		return nil
	}
	up, since := false, time.Time{}
	if sess != nil {
		c := sess.Component()
		up, since = c.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN, c.GetSince().AsTime()
	}
	return []*linev1.HealthComponent{o.disk.component(), o.outbox.component(context.Background(), up, since)}
}
