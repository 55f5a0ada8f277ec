package agent

import (
	"context"
	"errors"
	"io"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The writer owns the stream's outbound side: it is the only caller of Send
// and CloseSend. It sends what the reader, the pump and Emit queue on out,
// a heartbeat every interval (and at each one checks that Hello still says
// what works), and ends the stream from this side with a Goodbye: when the
// agent stops, when the relay asked for a drain, or when the capabilities
// changed.
func (l *link) write(ctx context.Context) error {
	hb := time.NewTicker(l.interval)
	defer hb.Stop()
	for {
		select {
		case f := <-l.out:
			if err := l.send(ctx, f); err != nil {
				return err
			}
		case <-hb.C:
			if !slices.Equal(l.s.o.Hello().GetCapabilities(), l.hello.GetCapabilities()) {
				// Hello must say exactly what works (the helper came or
				// went): say Goodbye and come back with a fresh Hello.
				l.s.o.Logger.Info("capabilities changed; reconnecting to announce them")
				return l.sayGoodbye(ctx, errCapabilities)
			}
			beat := &linev1.AgentFrame{Frame: &linev1.AgentFrame_Heartbeat{Heartbeat: &linev1.Heartbeat{SentAt: timestamppb.Now()}}}
			if err := l.send(ctx, beat); err != nil {
				return err
			}
		case <-l.drain:
			return l.sayGoodbye(ctx, errDrained)
		case <-l.s.goodbye:
			return l.sayGoodbye(ctx, errGoodbye)
		case <-ctx.Done():
			return nil
		}
	}
}

// send sends one frame. When the relay's end failed, Send says only io.EOF
// and the reader's Recv learns the status: the writer waits for the reader to
// end the stream with it (an Unauthenticated status renews the token), and
// returns that.
func (l *link) send(ctx context.Context, f *linev1.AgentFrame) error {
	err := l.stream.Send(f)
	if errors.Is(err, io.EOF) {
		<-ctx.Done()
		return context.Cause(ctx)
	}
	return err
}

// goodbyeWait bounds how long the writer waits, after Goodbye, for the relay
// to close its side.
const goodbyeWait = 3 * time.Second

// sayGoodbye flushes what is queued (results of drained commands), says
// Goodbye with why, half-closes, and waits up to goodbyeWait for the relay to
// close its side: cutting the stream at once would make a clean stop look
// like a crash. It returns why.
func (l *link) sayGoodbye(ctx context.Context, why error) error {
	for flushed := false; !flushed; {
		select {
		case f := <-l.out:
			if err := l.send(ctx, f); err != nil {
				return err
			}
		default:
			flushed = true
		}
	}
	reason := "agent shutting down"
	switch why {
	case errDrained:
		reason = "drained at the relay's request"
	case errCapabilities:
		reason = "capabilities changed"
	}
	l.saidGoodbye.Store(&why)
	_ = l.stream.Send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Goodbye{Goodbye: &linev1.Goodbye{Reason: reason}}})
	_ = l.stream.CloseSend()
	t := time.NewTimer(goodbyeWait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return why
}
