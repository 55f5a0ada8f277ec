package chatdb

// CursorBehind reports whether cursor a stands before cursor b in the same
// chat.db: b has read rows a has not. The agent asks it when the relay hands
// back the cursor it acknowledged and the journal has one of its own (a
// state.db restored from a backup): reading on from the older one would
// only re-emit events the relay has, some of them perhaps pruned from its
// key dedupe by now. Cursors of different databases, or either unreadable,
// are not ordered: false.
func CursorBehind(a, b []byte) bool {
	ca, err := parseCursor(a)
	if err != nil {
		return false
	}
	cb, err := parseCursor(b)
	if err != nil {
		return false
	}
	if ca.DB == "" || ca.DB != cb.DB {
		return false
	}
	return ca.MaxRowID < cb.MaxRowID
}

// CheckCursor reports whether b is a cursor this version can start from;
// the agent checks one the relay hands back before it stores it.
func CheckCursor(b []byte) error {
	_, err := parseCursor(b)
	return err
}
