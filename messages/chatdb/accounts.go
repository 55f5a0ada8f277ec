package chatdb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
)

// AccountAddresses lists the addresses (phone numbers and Apple ID emails)
// this Mac's Messages has used as its own: chats' account_login and the
// destination_caller_id of recent sent messages. The agent checks the lines
// it was configured with against them, so a typo in LINE_AGENT_LINES shows
// up as a health problem instead of as messages sent from the wrong number.
func (r *Reader) AccountAddresses(ctx context.Context) ([]string, error) {
	if _, err := r.Refresh(ctx); err != nil {
		return nil, err
	}
	var out []string
	err := r.with(ctx, func(db *sql.DB, sc *schema) error {
		queries := []string{}
		if r.HasColumn("chat", "account_login") {
			queries = append(queries, `SELECT DISTINCT account_login FROM chat WHERE account_login IS NOT NULL AND account_login != ''`)
		}
		if r.HasColumn("message", "destination_caller_id") {
			queries = append(queries, `SELECT DISTINCT destination_caller_id FROM (SELECT destination_caller_id FROM message WHERE is_from_me = 1 ORDER BY ROWID DESC LIMIT 1000) WHERE destination_caller_id IS NOT NULL AND destination_caller_id != ''`)
		}
		for _, q := range queries {
			rows, err := db.QueryContext(ctx, q)
			if err != nil {
				return fmt.Errorf("chatdb: account addresses: %w", err)
			}
			for rows.Next() {
				var a string
				if err := rows.Scan(&a); err != nil {
					rows.Close()
					return err
				}
				if a = lineFromAccount(a); !slices.Contains(out, a) {
					out = append(out, a)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}
