package fleetload

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Waits of one simulated agent: the relay answers Hello with Welcome
// within welcomeWait (the real agent's own bound), and a Goodbye is given
// goodbyeWait to be read before the stream is cut.
const (
	welcomeWait = 15 * time.Second
	goodbyeWait = 3 * time.Second
	// emitQueue is how many events may wait for an agent's loop to send
	// them; Emit blocks beyond it.
	emitQueue = 256
)

// Agent is one simulated Mac: its own enrollment (agent id, secret and
// access token), its own TLS connection and Connect stream, and its own
// lines. Its loop is the only sender on the stream, as the real agent's
// writer is.
type Agent struct {
	index  int
	target Target
	lines  []string
	id     string
	token  string
	epoch  string
	cc     *grpc.ClientConn
	client linev1.LineRelayClient

	emit  chan *linev1.Event
	ready chan struct{} // closed once Welcome came and the first health check is answered
	done  chan struct{} // closed when the loop has ended; err is set before
	err   error

	answered atomic.Int64 // commands answered with a result
	acked    atomic.Uint64
	emitted  atomic.Uint64 // the last sequence sent
}

// ID is the agent id the relay gave at enrollment.
func (a *Agent) ID() string { return a.id }

// Line is the agent's first line, the one commands are addressed to.
func (a *Agent) Line() string { return a.lines[0] }

// Addr is the agent's first line and its relay, what a Load addresses.
func (a *Agent) Addr() Line { return Line{Number: a.Line(), Target: a.target} }

// Answered is how many commands the agent has answered with a result.
func (a *Agent) Answered() int64 { return a.answered.Load() }

// Acked is the highest event sequence the relay has acknowledged on the
// current stream.
func (a *Agent) Acked() uint64 { return a.acked.Load() }

// Emitted is the sequence of the last event the agent sent.
func (a *Agent) Emitted() uint64 { return a.emitted.Load() }

// EmitMessage queues an incoming message event on the agent's first line
// and returns its key (unique, "<message guid>/message/1" as the real
// agent spells it). The agent's loop gives it the next sequence and sends
// it within the relay's window of unacknowledged events.
func (a *Agent) EmitMessage(ctx context.Context, text string) (string, error) {
	guid := "FL-" + randomHex(8)
	ev := &linev1.Event{
		Key: guid + "/message/1", Line: a.Line(),
		ChatGuid: "iMessage;-;+15557770001", MessageGuid: guid,
		Payload: &linev1.Event_Message{Message: &linev1.MessageEvent{Text: text, Service: "iMessage", Sender: "+15557770001"}},
	}
	select {
	case a.emit <- ev:
		return ev.Key, nil
	case <-a.done:
		return "", fmt.Errorf("fleetload: agent %s: its stream ended: %w", a.id, a.err)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// enroll enrolls the agent through the relay's Enroll RPC with the fleet's
// project token.
func (a *Agent) enroll(ctx context.Context, projectToken string) error {
	ctx, cancel := context.WithTimeout(ctx, welcomeWait)
	defer cancel()
	resp, err := a.client.Enroll(ctx, &linev1.EnrollRequest{
		ProjectToken: projectToken, Hostname: fmt.Sprintf("fleet-%05d", a.index), Version: Version, Lines: a.lines,
	})
	if err != nil {
		return fmt.Errorf("fleetload: enroll agent %d: %w", a.index, err)
	}
	a.id, a.token = resp.GetAgentId(), resp.GetCredential().GetAccessToken()
	return nil
}

// run holds the agent's one stream until ctx ends (then it says Goodbye),
// the relay drains it, or the stream fails. It never reconnects: a stream
// lost under load is a finding, and Fleet.Lost counts it.
func (a *Agent) run(ctx context.Context) {
	defer close(a.done)
	a.err = a.serve(ctx)
}

func (a *Agent) serve(ctx context.Context) error {
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.WithoutCancel(ctx), "authorization", "Bearer "+a.token))
	defer cancel()
	st, err := a.client.Connect(sctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if err := st.Send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Hello{Hello: &linev1.Hello{
		AgentId: a.id, Version: Version, Lines: a.lines, Hostname: fmt.Sprintf("fleet-%05d", a.index),
		Driver: "fleetload", JournalEpoch: a.epoch,
		Capabilities: []linev1.Capability{linev1.Capability_CAPABILITY_SEND_TEXT},
	}}}); err != nil {
		return fmt.Errorf("send Hello: %w", err)
	}
	frames := make(chan *linev1.RelayFrame, 64)
	recvErr := make(chan error, 1)
	go func() {
		defer close(frames)
		for {
			f, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case frames <- f:
			case <-sctx.Done():
				recvErr <- sctx.Err()
				return
			}
		}
	}()
	l := &loop{a: a, st: st, frames: frames, recvErr: recvErr}
	if err := l.welcome(); err != nil {
		return err
	}
	return l.serve(ctx)
}

// loop is one stream's state, owned by the agent's goroutine.
type loop struct {
	a       *Agent
	st      linev1.LineRelay_ConnectClient
	frames  <-chan *linev1.RelayFrame
	recvErr <-chan error
	hb      time.Duration
	window  uint64 // the relay's max_unacked_events
	seq     uint64 // the last sequence sent
	acked   uint64
}

func (l *loop) welcome() error {
	t := time.NewTimer(welcomeWait)
	defer t.Stop()
	select {
	case f, ok := <-l.frames:
		if !ok {
			return fmt.Errorf("stream ended before Welcome: %w", <-l.recvErr)
		}
		w := f.GetWelcome()
		if w == nil {
			return fmt.Errorf("the relay's first frame is not Welcome: %T", f.GetFrame())
		}
		if len(w.GetRefusedLines()) > 0 {
			return fmt.Errorf("the relay refused line %s: %s", w.GetRefusedLines()[0].GetLine(), w.GetRefusedLines()[0].GetReason())
		}
		l.hb = w.GetHeartbeatInterval().AsDuration()
		if l.hb <= 0 {
			l.hb = 15 * time.Second
		}
		l.window = uint64(max(1, w.GetLimits().GetMaxUnackedEvents()))
		// A fresh journal (one epoch per Agent) numbers from the relay's
		// stored sequence, as the real agent replays from the lower one.
		l.seq, l.acked = w.GetStoredEventSequence(), w.GetStoredEventSequence()
		l.a.acked.Store(l.acked)
		l.a.emitted.Store(l.seq)
		return nil
	case <-t.C:
		return fmt.Errorf("no Welcome within %s", welcomeWait)
	}
}

func (l *loop) serve(ctx context.Context) error {
	hb := time.NewTicker(l.hb)
	defer hb.Stop()
	readyClosed := false
	for {
		// Events go only while the relay's window has room.
		var emit <-chan *linev1.Event
		if l.seq-l.acked < l.window {
			emit = l.a.emit
		}
		select {
		case <-ctx.Done():
			_ = l.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Goodbye{Goodbye: &linev1.Goodbye{Reason: "fleetload: load test over"}}})
			_ = l.st.CloseSend()
			t := time.NewTimer(goodbyeWait)
			defer t.Stop()
			for {
				select {
				case _, ok := <-l.frames:
					if !ok {
						return nil
					}
				case <-t.C:
					return nil
				}
			}
		case f, ok := <-l.frames:
			if !ok {
				err := <-l.recvErr
				if errors.Is(err, io.EOF) {
					return errors.New("the relay ended the stream")
				}
				return err
			}
			done, err := l.handle(f)
			if err != nil {
				return err
			}
			if done {
				return errors.New("the relay drained the stream")
			}
			if f.GetHealthCheck() != nil && !readyClosed {
				readyClosed = true
				close(l.a.ready)
			}
		case <-hb.C:
			if err := l.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Heartbeat{Heartbeat: &linev1.Heartbeat{SentAt: timestamppb.Now()}}}); err != nil {
				return err
			}
		case ev := <-emit:
			// The event's date is when it goes on the stream, so whoever
			// reads it knows how long it took to reach them.
			l.seq++
			ev.Sequence, ev.Date = l.seq, timestamppb.Now()
			if err := l.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Event{Event: ev}}); err != nil {
				return err
			}
			l.a.emitted.Store(l.seq)
		}
	}
}

// handle answers one relay frame; done is true after a Drain (the agent
// has said Goodbye).
func (l *loop) handle(f *linev1.RelayFrame) (done bool, err error) {
	switch fr := f.GetFrame().(type) {
	case *linev1.RelayFrame_HealthCheck:
		return false, l.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Health{Health: healthReport(fr.HealthCheck.GetId())}})
	case *linev1.RelayFrame_Command:
		return false, l.answer(fr.Command)
	case *linev1.RelayFrame_EventAck:
		if s := fr.EventAck.GetSequence(); s > l.acked {
			l.acked = s
			l.a.acked.Store(s)
		}
	case *linev1.RelayFrame_Drain:
		_ = l.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Goodbye{Goodbye: &linev1.Goodbye{Reason: "drained: " + fr.Drain.GetReason()}}})
		return true, nil
	case *linev1.RelayFrame_Heartbeat, *linev1.RelayFrame_Welcome:
		// Arrival is all a heartbeat says; a second Welcome is not sent.
	}
	return false, nil
}

// answer does what the bench's instant driver does behind the real agent:
// the command is accepted and succeeds at once, with a snapshot naming a
// made-up message GUID in the command's chat.
func (l *loop) answer(cmd *linev1.Command) error {
	id := cmd.GetId()
	if err := l.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Update{Update: &linev1.CommandUpdate{
		CommandId: id, State: linev1.CommandState_COMMAND_STATE_ACCEPTED,
	}}}); err != nil {
		return err
	}
	now := timestamppb.Now()
	if err := l.send(&linev1.AgentFrame{Frame: &linev1.AgentFrame_Result{Result: &linev1.CommandResult{
		CommandId: id, FinishedAt: now,
		Outcome: &linev1.CommandResult_Snapshot{Snapshot: &linev1.Snapshot{
			MessageGuid: "FL-" + randomHex(8), ChatGuid: cmd.GetChatGuid(), Sent: true, Date: now, Service: "iMessage",
		}},
	}}}); err != nil {
		return err
	}
	l.a.answered.Add(1)
	return nil
}

func (l *loop) send(f *linev1.AgentFrame) error {
	if err := l.st.Send(f); err != nil {
		return fmt.Errorf("send %T: %w", f.GetFrame(), err)
	}
	return nil
}

// healthReport is a healthy Mac's answer: every component a send text
// needs is OK, so the relay holds nothing back.
func healthReport(checkID string) *linev1.HealthReport {
	now := timestamppb.Now()
	r := &linev1.HealthReport{CheckId: checkID, Status: linev1.HealthStatus_HEALTH_STATUS_OK, At: now}
	for _, name := range []string{component.Relay, component.Journal, component.ChatDB, component.Automation, component.Messages} {
		r.Components = append(r.Components, &linev1.HealthComponent{Name: name, Status: linev1.HealthStatus_HEALTH_STATUS_OK, Detail: "fleetload", Since: now})
	}
	return r
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
