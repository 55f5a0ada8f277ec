package agent

import (
	"context"
	"time"
)

// The watchdog owns the stream's liveness: a relay that answers TCP and
// HTTP/2 keepalives but sends nothing (its process hung, or it stopped
// reading) is dead to the agent. The relay sends a heartbeat every interval;
// when no frame at all arrived for twice that, the watchdog ends the stream
// with errWatchdog and Run reconnects. The reader resets it at every frame
// through heard.
func (l *link) watch(ctx context.Context) error {
	silence := 2 * l.interval
	t := time.NewTimer(silence)
	defer t.Stop()
	for {
		select {
		case <-l.heard:
			t.Reset(silence)
		case <-t.C:
			return errWatchdog
		case <-ctx.Done():
			return nil
		}
	}
}
