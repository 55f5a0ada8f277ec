package agent

import (
	"context"
	"math"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Health is the quotas' part of a HealthReport, from one reading of the
// counts: the component operators read, and the typed headroom of each
// served line, which the relay reads to place a pool's new end users on the
// line with the most room (the text of the component is for people; the
// relay must not parse it). The headroom is nil when the counts cannot be
// read: the relay then knows nothing rather than something wrong.
func (q *Quotas) Health() (*linev1.HealthComponent, []*linev1.LineHeadroom) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	h, err := q.Headroom(ctx)
	hc := q.component(h, err)
	if err != nil {
		return hc, nil
	}
	out := make([]*linev1.LineHeadroom, 0, len(q.lines))
	for _, l := range q.lines {
		out = append(out, &linev1.LineHeadroom{
			Line:                 l,
			NewConversationsLeft: wireLeft(h.NewConversationsLeft[l]),
			SendsLeft:            wireLeft(h.SendsLeft),
		})
	}
	return hc, out
}

// wireLeft is a count left in LineHeadroom's int32, where -1 (no limit)
// passes unchanged and a count past int32 is capped rather than wrapped.
func wireLeft(n int) int32 {
	return int32(min(n, math.MaxInt32))
}
