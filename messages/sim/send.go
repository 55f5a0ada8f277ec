package sim

import (
	"context"
	"errors"
	"time"
)

// Delivery is an outgoing message as it reaches the people in a chat.
type Delivery struct {
	ChatGUID    string
	MessageGUID string
	Text        string
	// To are the chat's participants.
	To    []string
	Group bool
}

// Outgoing says how "Apple's servers" answer a message Send writes.
type Outgoing struct {
	// Latency is how long they take to mark the row sent, and then again to
	// mark it delivered (default 5ms).
	Latency time.Duration
	// FailCode, when > 0, fails the send: after Latency the row is marked
	// with message.error = FailCode instead of sent, as Messages does when
	// iMessage rejects a message.
	FailCode int
	// Stuck leaves the row written and never sent, as a send stuck in
	// Messages.
	Stuck bool
	// Deliver is handed the message once it is delivered: the people in
	// the chat (Remote.Deliver). It must not block; nil means nobody reads
	// it.
	Deliver func(Delivery)
	// Stop, when closed, abandons the steps not taken yet (Messages
	// quitting). Closing the Store does too.
	Stop <-chan struct{}
}

// ErrSendStopped is the result of a send abandoned before the servers
// answered (Outgoing.Stop, or the Store closing).
var ErrSendStopped = errors.New("sim: send stopped before it was delivered")

// Sending is an outgoing message on its way: written, and answered by the
// servers on its own goroutine.
type Sending struct {
	row  Row
	done chan struct{}
	err  error // set before done is closed
}

// Row is the message row Send wrote.
func (s *Sending) Row() Row { return s.row }

// Done is closed once the send is over: delivered, failed, stopped, or at
// once for a stuck send.
func (s *Sending) Done() <-chan struct{} { return s.done }

// Err waits until Done and returns the result: nil when the row was marked
// delivered (or failed, or left stuck, as Outgoing asked), ErrSendStopped,
// or the error writing a step.
func (s *Sending) Err() error {
	<-s.done
	return s.err
}

// Send writes m into chat as an outgoing message (is_from_me, not yet sent),
// as Messages commits a message when you press send, and returns once the
// row is written. The servers then answer on their own, each step its own
// transaction as on a Mac: after o.Latency the row is marked sent, after
// another o.Latency delivered, and then the message is handed to o.Deliver;
// unless o fails the send or leaves it stuck. The row exists, so the send
// is underway: ctx bounds only the insert, not the steps after it.
func (s *Store) Send(ctx context.Context, chat Chat, m Msg, o Outgoing) (*Sending, error) {
	if o.Latency <= 0 {
		o.Latency = 5 * time.Millisecond
	}
	m.Chat, m.FromMe = chat.GUID, true
	m.Sent, m.Delivered, m.Read, m.Error = false, false, false, 0
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errClosed
	}
	s.sends.Add(1)
	s.mu.Unlock()
	row, err := s.Insert(ctx, m)
	if err != nil {
		s.sends.Done()
		return nil, err
	}
	snd := &Sending{row: row, done: make(chan struct{})}
	go func() {
		defer s.sends.Done()
		defer close(snd.done)
		snd.err = s.answer(chat, row, m.Text, o)
		if errors.Is(snd.err, errClosed) {
			snd.err = ErrSendStopped // the Store closed between two steps
		}
	}()
	return snd, nil
}

// answer plays Apple's servers for the outgoing row.
func (s *Store) answer(chat Chat, row Row, text string, o Outgoing) error {
	ctx := context.Background()
	wait := func() bool {
		t := time.NewTimer(o.Latency)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-o.Stop:
		case <-s.quit:
		}
		return false
	}
	if o.Stuck {
		return nil
	}
	if !wait() {
		return ErrSendStopped
	}
	if o.FailCode > 0 {
		return s.SetError(ctx, row.GUID, o.FailCode)
	}
	if err := s.MarkSent(ctx, row.GUID); err != nil {
		return err
	}
	if !wait() {
		return ErrSendStopped
	}
	if err := s.MarkDelivered(ctx, row.GUID); err != nil {
		return err
	}
	if o.Deliver != nil {
		o.Deliver(Delivery{ChatGUID: chat.GUID, MessageGUID: row.GUID, Text: text, To: chat.Participants, Group: chat.IsGroup()})
	}
	return nil
}
