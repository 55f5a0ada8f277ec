package applescript

import (
	"context"
	"sync"

	"github.com/line-agent/line-agent/messages/chatdb"
)

// ChatDB is the read-only view of chat.db the sender needs; *chatdb.Reader
// satisfies it. AppleScript returns no message GUID, so the outgoing row is
// the only proof that Messages took a send, and its state is the truthful
// answer to the relay.
type ChatDB interface {
	// FindOutgoing returns a row with is_from_me = 1 in the chat chatGUID
	// (under any service spelling: iMessage;-;x, any;-;x...) whose text
	// (text column or attributedBody) is text, in the window w; an error
	// wrapping chatdb.ErrNotFound when there is none yet. An
	// attachment-only message's text is U+FFFC.
	FindOutgoing(ctx context.Context, chatGUID, text string, w chatdb.Window) (chatdb.MessageState, error)
	// NewestRowID is chat.db's newest message ROWID, the mark a send's
	// window starts after.
	NewestRowID(ctx context.Context) (int64, error)
	// LookupMessage re-reads the row with message.guid guid.
	LookupMessage(ctx context.Context, guid string) (chatdb.MessageState, error)
}

var _ ChatDB = (*chatdb.Reader)(nil)

// claimed remembers the rows recent sends were matched to, so that sending
// the same text twice in quick succession never reports the first row for the
// second send. Bounded: the oldest GUIDs are forgotten first.
type claimed struct {
	mu    sync.Mutex
	set   map[string]bool // guarded by mu
	order []string        // guarded by mu; at most max entries, oldest first
	max   int
}

func newClaimed(max int) *claimed {
	return &claimed{set: make(map[string]bool), max: max}
}

// claim records guid and reports whether it was free.
func (c *claimed) claim(guid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set[guid] {
		return false
	}
	c.set[guid] = true
	c.order = append(c.order, guid)
	if len(c.order) > c.max {
		delete(c.set, c.order[0])
		c.order = c.order[1:]
	}
	return true
}

// has reports whether guid is already taken.
func (c *claimed) has(guid string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set[guid]
}
