package chatdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/line-agent/line-agent/command"
)

// contactedScan bounds the rows Contacted looks at per question: one row
// on the line answers it, and rows of another account sharing this Mac are
// rare, so a conversation hidden beyond the bound is judged new (the
// conservative mistake: a quota counts it).
const contactedScan = 1000

// Contacted reports whether chat.db shows a conversation between line and
// handle: a message this account sent from line, not failed, in a chat the
// handle belongs to, or a message the handle wrote to line. It is what the
// new-conversation quota asks ("a first message to a recipient this line
// has never messaged"; a reply to someone who wrote first is not new), and
// it judges a row's line as the events do (lineOf).
func (r *Reader) Contacted(ctx context.Context, line, handle string) (bool, error) {
	if _, err := r.Refresh(ctx); err != nil {
		return false, err
	}
	want := command.NormalizeLine(line)
	h := strings.ToLower(command.NormalizeLine(handle))
	found := false
	err := r.with(ctx, func(db *sql.DB, sc *schema) error {
		m := func(col, fallback string) string {
			return "coalesce(" + sc.col("message", "m", col, fallback) + ", " + fallback + ")"
		}
		lineCols := m("destination_caller_id", "''") + ", " + m("account", "''") + ", coalesce(" + sc.col("chat", "c", "account_login", "NULL") + ", '')"
		queries := []string{
			// Ours, in a chat the handle is a member of.
			`SELECT ` + lineCols + ` FROM handle h
				JOIN chat_handle_join hj ON hj.handle_id = h.ROWID
				JOIN chat c ON c.ROWID = hj.chat_id
				JOIN chat_message_join mj ON mj.chat_id = c.ROWID
				JOIN message m ON m.ROWID = mj.message_id
				WHERE lower(h.id) = ? AND m.is_from_me = 1 AND ` + m("error", "0") + ` = 0 AND ` + m("item_type", "0") + ` = 0
				LIMIT ?`,
			// Theirs, written to this account.
			`SELECT ` + lineCols + ` FROM handle h
				JOIN message m ON m.handle_id = h.ROWID
				LEFT JOIN chat c ON c.ROWID = (SELECT j.chat_id FROM chat_message_join j WHERE j.message_id = m.ROWID ORDER BY j.chat_id LIMIT 1)
				WHERE lower(h.id) = ? AND m.is_from_me = 0 AND ` + m("item_type", "0") + ` = 0
				LIMIT ?`,
		}
		conv := r.converter()
		for _, q := range queries {
			ok, err := anyOnLine(ctx, db, q, h, conv, want)
			if err != nil {
				return fmt.Errorf("chatdb: contacted: %w", err)
			}
			if ok {
				found = true
				return nil
			}
		}
		return nil
	})
	return found, err
}

// anyOnLine runs q (three line columns per row) and reports whether a row
// belongs to line want, stopping at the first that does.
func anyOnLine(ctx context.Context, db *sql.DB, q, handle string, conv *converter, want string) (bool, error) {
	rs, err := db.QueryContext(ctx, q, handle, contactedScan)
	if err != nil {
		return false, err
	}
	defer rs.Close()
	for rs.Next() {
		var rw row
		if err := rs.Scan(&rw.DestCallerID, &rw.Account, &rw.ChatLogin); err != nil {
			return false, err
		}
		if command.NormalizeLine(conv.lineOf(&rw)) == want {
			return true, nil
		}
	}
	return false, rs.Err()
}
