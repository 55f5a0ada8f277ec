package agent

import (
	"context"
	"log/slog"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// pumpEvents commits the backend's own events (not chat.db's: a Messages
// restart, say) to the journal's outbox as they come, so they reach the
// relay like every other event: once, in order, after a reconnect too.
// They leave chat.db's cursor where it is. A write that fails is tried
// again every second until it lands or ctx ends: the journal's health
// says why meanwhile.
func pumpEvents(ctx context.Context, events <-chan *linev1.Event, sink Sink, log *slog.Logger) {
	for {
		var ev *linev1.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-events:
		}
		for {
			err := sink.Commit(ctx, []*linev1.Event{ev}, nil)
			if err == nil {
				break
			}
			log.Error("an agent event could not be recorded; trying again", "key", ev.GetKey(), "err", err)
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}
