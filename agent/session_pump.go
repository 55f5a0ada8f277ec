package agent

import (
	"context"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The event pump owns the stream's share of the outbox: it replays the
// events after the resume point, then follows the outbox as the tailer
// commits more, never more than the relay's window ahead of its acks. The
// reader records each EventAck in the journal (which deletes the acked
// events) and passes it on through acks; the pump only moves its window.
// Events reach the writer through out, in turn with Emit's updates and
// results and the reader's health answers; so do the cursor marks
// (session_marks.go), once the acks they wait for have arrived.
func (l *link) pump(ctx context.Context) error {
	sent, acked := l.acked, l.acked
	marks := newMarker(l.s.o.Journal, l.s.o.CursorMarkEvery)
	defer marks.stop()
	for {
		// Taken before reading, so a commit after the read wakes the wait.
		changed := l.s.o.Journal.Changed()
		for sent-acked < l.window {
			evs, err := l.s.o.Journal.EventsAfter(ctx, sent, int(min(l.window-(sent-acked), 256)))
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				select {
				case l.out <- &linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: ev}}:
				case <-ctx.Done():
					return nil
				}
				sent = ev.GetSequence()
			}
		}
		mark, later := marks.poll()
		if mark != nil {
			select {
			case l.out <- mark:
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-changed:
		case a := <-l.acks:
			acked = max(acked, a)
		case <-later:
		case <-ctx.Done():
			return nil
		}
	}
}
