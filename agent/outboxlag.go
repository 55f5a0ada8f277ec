package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The "outbox" component: how long events have waited for the relay's
// acknowledgement. The journal component counts them and says when the
// outbox is full; this one notices acks that stopped coming while the
// stream is up (a relay that takes events and stores none), long before
// the outbox fills.

// outboxReadTimeout bounds the one indexed read the component does on
// the health call.
const outboxReadTimeout = 250 * time.Millisecond

// OldestUnacked returns when the oldest event still awaiting the relay's
// ack was stored (by the journal's wall clock), and false when the outbox
// is empty. It reads one row by the primary key.
func (j *Journal) OldestUnacked(ctx context.Context) (time.Time, bool, error) {
	var ns int64
	err := j.db.QueryRowContext(ctx, `SELECT created_at FROM outbox ORDER BY seq LIMIT 1`).Scan(&ns)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("journal: oldest unacknowledged event: %w", err)
	}
	return time.Unix(0, ns), true, nil
}

// outboxComponent judges the outbox's lag.
type outboxComponent struct {
	j *Journal
	// max is how long an event may wait while the stream is up.
	max time.Duration
	// wall is the clock the journal dates events with; now the one the
	// session dates its stream with. Each age is taken on its own clock.
	wall, now func() time.Time

	mu sync.Mutex
	st sinceTracker // guarded by mu
}

// component reports the outbox; up and since are the relay stream's
// state and since when it holds.
func (o *outboxComponent) component(ctx context.Context, up bool, since time.Time) *linev1.HealthComponent {
	c := o.check(ctx, up, since)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.set(c, o.now())
	return o.st.component(component.Outbox)
}

func (o *outboxComponent) check(ctx context.Context, up bool, since time.Time) component.Check {
	n := o.j.OutboxLen()
	if n == 0 {
		return component.OK("no events awaiting the relay's ack")
	}
	ctx, cancel := context.WithTimeout(ctx, outboxReadTimeout)
	defer cancel()
	oldest, ok, err := o.j.OldestUnacked(ctx)
	if err != nil {
		return component.Degraded("cannot read the outbox: "+err.Error(), "see the journal component")
	}
	if !ok {
		return component.OK("no events awaiting the relay's ack")
	}
	age := max(o.wall().Sub(oldest), 0)
	seen := fmt.Sprintf("%d events awaiting the relay's ack, the oldest stored %s ago", n, age.Round(time.Second))
	if !up {
		// The relay component is DOWN and says why; events wait in the
		// outbox as they should.
		return component.OK(seen + "; the relay stream is down, they are sent when it is back")
	}
	// A stream that just came up replays from the acked point: the wait
	// counts from the later of the event and the stream.
	waited := min(age, max(o.now().Sub(since), 0))
	if waited > o.max {
		return component.Degraded(fmt.Sprintf("%s, %s of it with the stream up: the relay is not acknowledging events (over %s)", seen, waited.Round(time.Second), o.max),
			"look at the relay's log for errors storing events; the events stay in the outbox and are replayed on the next stream, nothing is lost")
	}
	return component.OK(seen)
}
