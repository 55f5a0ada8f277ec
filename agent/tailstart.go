package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// tailStart runs the chat.db tailer from the right place. The one rule
// (docs/reliability.md, "A lost or restored state.db"):
//
//   - the journal has a cursor: read on from it at once. If a Welcome then
//     brings the relay's acknowledged cursor and the journal's is behind
//     it (a state.db restored from a backup), stop and read on from the
//     relay's instead;
//   - the journal has none and was created by enrollment: start at the end
//     of chat.db, at once (what was there before is history, not news);
//   - the journal has none otherwise (state.db was lost, the agent maybe
//     stopped again before it got a cursor): read nothing until the first
//     Welcome, then read from the cursor it carries, so every message the
//     relay did not acknowledge is read again. A relay with no cursor for
//     the agent (it never acknowledged any) means the end of chat.db.
//
// Re-read rows give events with the keys of their first reading, and the
// relay drops those it has: each arrives once.
type tailStart struct {
	tailer  Tailer
	sink    Sink
	journal *Journal
	log     *slog.Logger
	// welcomes holds the acked cursor of the newest Welcome not yet taken
	// (nil: Welcome carried none); capacity 1, the newest replaces it.
	welcomes chan []byte
}

func newTailStart(t Tailer, sink Sink, j *Journal, log *slog.Logger) *tailStart {
	return &tailStart{tailer: t, sink: sink, journal: j, log: log, welcomes: make(chan []byte, 1)}
}

// startWait bounds how long the agent waits, before it says Hello, for a
// fresh journal's reader to fix where chat.db's news begins.
const startWait = 10 * time.Second

// awaitStart returns once the journal holds a chat.db cursor (a fresh
// journal's reader commits the end of chat.db as its first one), or at
// once when the cursor is to come from the relay's Welcome, or after
// limit: chat.db unreadable (no Full Disk Access yet) must not keep the
// agent from its relay, and the reader's health says why. Without the
// wait, messages arriving between the start and the reader's first look
// would count as history and never be reported.
func (t *tailStart) awaitStart(ctx context.Context, limit time.Duration) {
	if wait, err := t.journal.awaitsRelayCursor(ctx); err != nil || wait {
		return
	}
	deadline := time.Now().Add(limit)
	for {
		if c, err := t.journal.Cursor(ctx); err == nil && c != nil {
			return
		}
		if !time.Now().Before(deadline) {
			t.log.Warn("chat.db's reader has not fixed its starting point yet; connecting anyway (messages arriving before it does are taken for history)", "waited", limit)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// welcome hears a Welcome; it never blocks (Session.OnWelcome).
func (t *tailStart) welcome(w *linev1.Welcome) {
	c := w.GetAckedChatdbCursor()
	if len(c) == 0 {
		c = nil
	}
	for {
		select {
		case t.welcomes <- c:
			return
		default:
		}
		select {
		case <-t.welcomes:
		default:
		}
	}
}

// run follows chat.db until ctx ends or the tailer fails.
func (t *tailStart) run(ctx context.Context) error {
	start, err := t.journal.Cursor(ctx)
	if err != nil {
		return err
	}
	if start == nil {
		wait, err := t.journal.awaitsRelayCursor(ctx)
		if err != nil {
			return err
		}
		if wait {
			t.log.Info("state.db has no chat.db cursor: reading chat.db waits for the cursor the relay acknowledged")
			select {
			case c := <-t.welcomes:
				if start, err = t.seed(ctx, c); err != nil {
					return err
				}
			case <-ctx.Done():
				return nil
			}
		}
	}
	for {
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- t.tailer.Run(tctx, start, t.sink) }()
		next, err := t.follow(ctx, done)
		cancel()
		if next == nil {
			return err
		}
		<-done
		// The tailer may have committed on from the old cursor meanwhile.
		mine, err := t.journal.Cursor(ctx)
		if err != nil {
			return err
		}
		start = mine
		if chatdb.CursorBehind(mine, next) {
			if start, err = t.seed(ctx, next); err != nil {
				return err
			}
		}
	}
}

// follow waits for the tailer to end, or for a Welcome whose cursor is
// ahead of the journal's; it returns that cursor to restart from, or nil
// with the tailer's outcome.
func (t *tailStart) follow(ctx context.Context, done <-chan error) ([]byte, error) {
	for {
		select {
		case err := <-done:
			return nil, err
		case c := <-t.welcomes:
			mine, err := t.journal.Cursor(ctx)
			if err != nil || !chatdb.CursorBehind(mine, c) {
				continue
			}
			t.log.Warn("state.db's chat.db cursor is behind the one the relay acknowledged (state.db restored from a backup?): reading chat.db on from the relay's")
			return c, nil
		}
	}
}

// seed stores the relay's cursor as the journal's, so a stop before the
// first change still resumes from it, and returns it; without one, chat.db
// is read from its end.
func (t *tailStart) seed(ctx context.Context, c []byte) ([]byte, error) {
	if err := chatdb.CheckCursor(c); c != nil && err != nil {
		t.log.Error("the relay's chat.db cursor is unreadable; ignoring it", "err", err)
		c = nil
	}
	if c == nil {
		t.log.Warn("the relay has no chat.db cursor for this agent: reading chat.db from its end; messages that arrived while state.db was missing are not reported")
		return nil, nil
	}
	if err := t.journal.Commit(ctx, nil, c); err != nil {
		return nil, err
	}
	t.log.Info("reading chat.db from the cursor the relay acknowledged")
	return c, nil
}
