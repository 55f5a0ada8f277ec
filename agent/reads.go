package agent

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// ChatReader answers the read commands (get_message, get_chat) from
// chat.db. Every driver, the simulated one and a Mac's, writes a chat.db
// the agent reads anyway, so reads need no Messages capability; their
// errors are *command.Error (NOT_FOUND for what chat.db lacks).
type ChatReader interface {
	ReadMessage(ctx context.Context, guid string) (*linev1.StoredMessage, error)
	ReadChat(ctx context.Context, chatGUID string) (*linev1.StoredChat, error)
}

// readSlots bounds the reads running at once: chat.db's reader keeps a
// small pool of connections, and a burst of reads must not queue the
// confirmer's queries behind it for long.
const readSlots = 4

// reads is the dispatcher's state for read commands. A read changes
// nothing in Messages, so it takes none of the write path's care: it is
// not journaled (a crash leaves nothing to settle, and the relay's
// redelivery simply reads again instead of hearing IN_DOUBT), it waits in
// no chat's queue (a slow send never holds up a read), and it reports no
// progress, only its result.
type reads struct {
	db    ChatReader
	slots chan struct{}
	// running holds the ids being read, so a redelivery meanwhile is not
	// read twice at once (its one result is on its way); guarded by the
	// dispatcher's mu.
	running map[string]bool
}

func newReads(db ChatReader) reads {
	return reads{db: db, slots: make(chan struct{}, readSlots), running: map[string]bool{}}
}

// submitRead takes a read command: checked as every command is, bounded by
// MaxQueued with the others, and run on its own goroutine so the stream
// reader never waits on chat.db.
func (d *Dispatcher) submitRead(cmd *linev1.Command) {
	id := cmd.GetId()
	d.mu.Lock()
	running, draining, full := d.reads.running[id], d.draining, d.queued >= d.maxQueued
	d.mu.Unlock()
	switch {
	case running:
		return
	case draining:
		d.log.Info("draining: read left for the next connection", "command", id)
		return
	}
	d.noteSubmit(cmd) // every path from here gives it a result
	switch {
	case full:
		d.emitResult(d.failure(id, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "agent busy: %d commands already queued", d.maxQueued)))
		return
	}
	if err := d.check(cmd); err != nil {
		d.emitResult(d.failure(id, err))
		return
	}
	d.mu.Lock()
	if d.reads.running[id] {
		d.mu.Unlock()
		return
	}
	d.reads.running[id] = true
	d.queued++
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		res := d.read(cmd)
		d.mu.Lock()
		delete(d.reads.running, id)
		d.leftLocked()
		d.mu.Unlock()
		if res != nil {
			d.emitResult(res)
		}
	}()
}

// read runs one read to its result, or nil when a hard stop cut it short:
// nothing was recorded, so the relay hands it to the next connection.
func (d *Dispatcher) read(cmd *linev1.Command) *linev1.CommandResult {
	id := cmd.GetId()
	deadline := d.now().Add(command.DefaultTimeout)
	if dl := cmd.GetDeadline(); dl != nil {
		deadline = dl.AsTime()
	}
	ctx, cancel := context.WithDeadline(d.runCtx, deadline)
	defer cancel()
	select {
	case d.reads.slots <- struct{}{}:
		defer func() { <-d.reads.slots }()
	case <-ctx.Done():
		if d.runCtx.Err() != nil {
			return nil
		}
		return d.failure(id, command.Errorf(linev1.ErrorCode_ERROR_CODE_DEADLINE_EXCEEDED, "the deadline passed while the read waited for a free chat.db slot"))
	}
	start := time.Now()
	snap, err := d.readChatDB(ctx, cmd)
	if err != nil && d.runCtx.Err() != nil {
		return nil
	}
	if err != nil {
		d.log.Info("read failed", "command", id, "kind", command.KindName(cmd), "err", err, "took", time.Since(start))
		return d.failure(id, err)
	}
	d.log.Debug("read answered", "command", id, "kind", command.KindName(cmd), "took", time.Since(start))
	return &linev1.CommandResult{CommandId: id, FinishedAt: timestamppb.New(d.now()), Outcome: &linev1.CommandResult_Snapshot{Snapshot: snap}}
}

// readChatDB asks chat.db what the read wants to know.
func (d *Dispatcher) readChatDB(ctx context.Context, cmd *linev1.Command) (*linev1.Snapshot, error) {
	if d.reads.db == nil {
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNSUPPORTED, "this agent has no chat.db reader for %s", command.KindName(cmd))
	}
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_GetMessage:
		if k.GetMessage.GetMessageGuid() == "" {
			return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "get_message needs a message_guid")
		}
		m, err := d.reads.db.ReadMessage(ctx, k.GetMessage.GetMessageGuid())
		if err != nil {
			return nil, err
		}
		return &linev1.Snapshot{MessageGuid: m.GetEvent().GetMessageGuid(), ChatGuid: m.GetEvent().GetChatGuid(), StoredMessage: m}, nil
	case *linev1.Command_GetChat:
		if cmd.GetChatGuid() == "" {
			return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "get_chat needs the chat's GUID as its target (chat_guid)")
		}
		c, err := d.reads.db.ReadChat(ctx, cmd.GetChatGuid())
		if err != nil {
			return nil, err
		}
		return &linev1.Snapshot{ChatGuid: c.GetChatGuid(), Service: c.GetService(), StoredChat: c}, nil
	}
	return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, "%s is not a read", command.KindName(cmd))
}
