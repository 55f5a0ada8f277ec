package sim

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/line-agent/line-agent/command"
)

// Chat styles as chat.style stores them.
const (
	StyleGroup    = 43
	StyleOneToOne = 45
)

// ChatSpec describes a chat to find or create.
type ChatSpec struct {
	// GUID names the chat exactly ("iMessage;-;+15551234567",
	// "any;+;chat123"); empty means derive it from the participants, as
	// Messages does for a new conversation.
	GUID string
	// Service is "iMessage" (default), "SMS", "RCS" or "any" (macOS 26).
	Service string
	// Participants are the other people's handles (E.164 or email).
	Participants []string
	// Group makes a group chat (style 43) even with one participant; more
	// than one participant always makes a group.
	Group bool
	// DisplayName is the group's name, empty for none.
	DisplayName string
	// Line is the account the chat belongs to; empty means the Store's.
	Line string
}

// Chat is a chat row as the Store wrote it.
type Chat struct {
	RowID        int64
	GUID         string
	Identifier   string
	Service      string
	Style        int
	DisplayName  string
	Participants []string
	Line         string
}

// IsGroup reports whether the chat is a group (style 43).
func (c Chat) IsGroup() bool { return c.Style == StyleGroup }

// ErrNoChat is returned for a chat GUID the Store has no row for.
var ErrNoChat = errors.New("sim: no such chat")

// ErrNoMessage is returned for a message GUID the Store has no row for.
var ErrNoMessage = errors.New("sim: no such message")

// EnsureChat returns the chat that spec names, creating it with its handles
// and chat_handle_join rows when it does not exist. A one-to-one chat is found
// by its GUID; a group without a GUID is found by its exact set of
// participants, and otherwise created as "<service>;+;chat<digits>". Email
// handles are compared and stored lower-cased, as Messages does
// (command.NormalizeLine): "Alice@Example.com" and "alice@example.com" are
// one handle and one chat, iMessage;-;alice@example.com.
func (s *Store) EnsureChat(ctx context.Context, spec ChatSpec) (Chat, error) {
	written := spec.Participants // as given, for handle.uncanonicalized_id
	spec.Participants = canonicalHandles(spec.Participants)
	group := spec.Group || len(spec.Participants) > 1
	var named command.ChatGUID // what spec.GUID names
	if spec.GUID != "" {
		g, err := command.ParseChatGUID(spec.GUID)
		if err != nil {
			return Chat{}, fmt.Errorf("sim: %w", err)
		}
		named, spec.GUID, group = g, g.String(), g.Group
		if spec.Service == "" {
			spec.Service = g.Service
		}
		if !group && len(spec.Participants) == 0 {
			spec.Participants = []string{g.ID}
		}
	}
	if spec.Service == "" {
		spec.Service = "iMessage"
	}
	if spec.Line == "" {
		spec.Line = s.opts.line
	}
	if len(spec.Participants) == 0 {
		return Chat{}, errors.New("sim: a chat needs at least one participant")
	}
	var out Chat
	err := s.tx(ctx, func(tx *wtx) error {
		guid := spec.GUID
		if guid == "" && !group {
			guid = command.ChatGUID{Service: spec.Service, ID: spec.Participants[0]}.String()
		}
		if guid == "" {
			found, err := findGroup(ctx, tx, spec.Service, spec.Participants)
			if err != nil {
				return err
			}
			guid = found
		}
		if guid != "" {
			c, err := loadChat(ctx, tx, guid)
			if err == nil {
				out = c
				return nil
			}
			if !errors.Is(err, ErrNoChat) {
				return err
			}
		}
		ident := spec.Participants[0]
		style := StyleOneToOne
		if group {
			style = StyleGroup
			if guid == "" {
				ident = fmt.Sprintf("chat%018d", s.rnd.Int64N(1e18))
				guid = command.ChatGUID{Service: spec.Service, Group: true, ID: ident}.String()
			} else {
				ident = named.ID
			}
		}
		var dn any
		if spec.DisplayName != "" && group {
			dn = spec.DisplayName
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO chat (guid, style, state, account_id, chat_identifier, service_name, room_name, account_login, last_addressed_handle, display_name, group_id, successful_query)
			VALUES (?, ?, 3, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
			guid, style, s.newGUID(), ident, spec.Service, roomName(group, ident), accountLogin(spec.Line), spec.Line, dn, s.newGUID())
		if err != nil {
			return fmt.Errorf("sim: insert chat %s: %w", guid, err)
		}
		id, _ := res.LastInsertId()
		for i, p := range spec.Participants {
			if i < len(written) {
				p = written[i]
			}
			hid, err := ensureHandle(ctx, tx, p, handleService(spec.Service))
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO chat_handle_join (chat_id, handle_id) VALUES (?, ?)`, id, hid); err != nil {
				return fmt.Errorf("sim: join handle: %w", err)
			}
		}
		out = Chat{RowID: id, GUID: guid, Identifier: ident, Service: spec.Service, Style: style, DisplayName: spec.DisplayName, Participants: slices.Clone(spec.Participants), Line: spec.Line}
		return nil
	})
	return out, err
}

// Chat returns the chat guid names as Messages finds one, or ErrNoChat: the
// chat with that GUID, an email identifier in any case, or else the same
// chat under another service's spelling ("iMessage;-;x" finds the chat
// stored as "any;-;x", and the other way round).
func (s *Store) Chat(ctx context.Context, guid string) (Chat, error) {
	var out Chat
	err := s.tx(ctx, func(tx *wtx) error {
		c, err := loadChat(ctx, tx, guid)
		if errors.Is(err, ErrNoChat) {
			if other, ok := otherSpelling(ctx, tx, guid); ok {
				c, err = loadChat(ctx, tx, other)
			}
		}
		out = c
		return err
	})
	return out, err
}

// otherSpelling finds the GUID of the chat that guid names under another
// service prefix: the same "<style>;<identifier>" after the first ';'.
func otherSpelling(ctx context.Context, tx *wtx, guid string) (string, bool) {
	g, perr := command.ParseChatGUID(guid)
	if perr != nil {
		return "", false
	}
	var other string
	err := tx.QueryRowContext(ctx, `SELECT guid FROM chat WHERE substr(guid, instr(guid, ';') + 1) = ? ORDER BY ROWID LIMIT 1`, g.Key()).Scan(&other)
	return other, err == nil
}

func roomName(group bool, ident string) any {
	if group {
		return ident
	}
	return nil
}

// handleService is the handle.service value for a chat service: handles of
// "any" chats are stored per real service; the sim uses iMessage.
func handleService(service string) string {
	if service == "any" {
		return "iMessage"
	}
	return service
}

// canonicalHandles returns hs in their one spelling (command.NormalizeLine),
// in a new slice.
func canonicalHandles(hs []string) []string {
	if hs == nil {
		return nil
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = command.NormalizeLine(h)
	}
	return out
}

// ensureHandle finds or creates the handle row for id on service. Messages
// keeps one row per handle whatever case an email address was written in:
// handle.id is the canonical (lower-case) form, uncanonicalized_id the
// spelling it was first written with.
func ensureHandle(ctx context.Context, tx *wtx, written, service string) (int64, error) {
	id := command.NormalizeLine(written)
	var rowid int64
	err := tx.QueryRowContext(ctx, `SELECT ROWID FROM handle WHERE id = ? AND service = ?`, id, service).Scan(&rowid)
	if err == nil {
		return rowid, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("sim: find handle %s: %w", id, err)
	}
	country := any(nil)
	if strings.HasPrefix(id, "+1") {
		country = "us"
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO handle (id, country, service, uncanonicalized_id, person_centric_id) VALUES (?, ?, ?, ?, NULL)`, id, country, service, written)
	if err != nil {
		return 0, fmt.Errorf("sim: insert handle %s: %w", id, err)
	}
	return res.LastInsertId()
}

// loadChat reads the chat named by guid, an email identifier in any case.
func loadChat(ctx context.Context, tx *wtx, guid string) (Chat, error) {
	guid = command.CanonicalChatGUID(guid)
	var c Chat
	var dn, login sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT ROWID, guid, chat_identifier, service_name, style, display_name, last_addressed_handle FROM chat WHERE guid = ?`, guid).
		Scan(&c.RowID, &c.GUID, &c.Identifier, &c.Service, &c.Style, &dn, &login)
	if errors.Is(err, sql.ErrNoRows) {
		return Chat{}, fmt.Errorf("%w: %s", ErrNoChat, guid)
	}
	if err != nil {
		return Chat{}, fmt.Errorf("sim: load chat %s: %w", guid, err)
	}
	c.DisplayName, c.Line = dn.String, login.String
	rows, err := tx.QueryContext(ctx, `SELECT h.id FROM chat_handle_join j JOIN handle h ON h.ROWID = j.handle_id WHERE j.chat_id = ? ORDER BY h.ROWID`, c.RowID)
	if err != nil {
		return Chat{}, fmt.Errorf("sim: load participants: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return Chat{}, err
		}
		c.Participants = append(c.Participants, h)
	}
	return c, rows.Err()
}

// findGroup returns the GUID of a group on service whose participants are
// exactly handles (in canonical form), or "".
func findGroup(ctx context.Context, tx *wtx, service string, handles []string) (string, error) {
	want := slices.Clone(handles)
	slices.Sort(want)
	rows, err := tx.QueryContext(ctx, `SELECT c.guid, group_concat(h.id, char(31)) FROM chat c
		JOIN chat_handle_join j ON j.chat_id = c.ROWID JOIN handle h ON h.ROWID = j.handle_id
		WHERE c.style = ? AND c.service_name = ? GROUP BY c.ROWID ORDER BY c.ROWID`, StyleGroup, service)
	if err != nil {
		return "", fmt.Errorf("sim: find group: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var guid, members string
		if err := rows.Scan(&guid, &members); err != nil {
			return "", err
		}
		got := strings.Split(members, "\x1f")
		slices.Sort(got)
		if slices.Equal(got, want) {
			return guid, nil
		}
	}
	return "", rows.Err()
}

// accountLogin spells a line as chat.account_login does ("P:+1555...",
// "E:addr").
func accountLogin(line string) string {
	a := accountOf(line)
	return strings.ToUpper(a[:1]) + a[1:]
}
