package agent

import (
	"context"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The reader owns the stream's inbound side: it is the only caller of Recv.
// It hands commands to the dispatcher (Submit only queues, so the reader
// never waits on Messages and keeps reading heartbeats and acks while a send
// is slow), records acks and passes them to the pump, answers health checks
// through the writer, and turns a Drain into the writer's Goodbye. Every
// frame, whatever it is, tells the watchdog the relay is alive.
//
// It ends when Recv fails: the relay closed the stream, the connection
// broke, or another loop ended the stream (then ctx is done and the error is
// beside the point).
func (l *link) read(ctx context.Context) error {
	for {
		f, err := l.stream.Recv()
		if err != nil {
			return streamErr(err)
		}
		l.heardFromRelay()
		switch fr := f.GetFrame().(type) {
		case *linev1.RelayFrame_Command:
			l.s.o.Submit(ctx, fr.Command)
		case *linev1.RelayFrame_EventAck:
			seq := fr.EventAck.GetSequence()
			if err := l.s.o.Journal.Ack(ctx, seq); err != nil {
				return err
			}
			l.passAck(seq)
		case *linev1.RelayFrame_HealthCheck:
			rep := l.s.o.Health(fr.HealthCheck.GetId())
			select {
			case l.out <- &linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: rep}}:
			case <-ctx.Done():
				return nil
			}
		case *linev1.RelayFrame_Drain:
			// The relay is going away (or rebalancing): end this stream
			// politely and come back on a new one. Results of commands
			// still running are in the journal for the redelivery.
			l.s.o.Logger.Info("relay asked to drain this stream", "reason", fr.Drain.GetReason())
			l.drainOnce.Do(func() { close(l.drain) })
		}
	}
}

// heardFromRelay tells the watchdog a frame arrived, without waiting: a
// token already waiting says the same.
func (l *link) heardFromRelay() {
	select {
	case l.heard <- struct{}{}:
	default:
	}
}

// passAck hands seq to the pump, replacing an ack it has not read yet (acks
// only grow, and the reader is the only sender, so the second send cannot
// block).
func (l *link) passAck(seq uint64) {
	select {
	case l.acks <- seq:
	default:
		select {
		case <-l.acks:
		default:
		}
		l.acks <- seq
	}
}
