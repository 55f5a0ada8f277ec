package agent

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/line-agent/line-agent/command"
	"github.com/line-agent/line-agent/pkg/wallclock"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// QuotaWindow is how far back the quotas look: every limit is per rolling
// 24 hours, so a slot frees exactly one window after the send that took it.
const QuotaWindow = 24 * time.Hour

// QuotaLimits are the provider's quotas (docs/quotas.md). A limit of zero
// or less means no limit: sends are still counted, so health shows the
// traffic and a limit set later starts from the truth.
type QuotaLimits struct {
	// Sends is the messages this agent (the server) may send per window.
	Sends int
	// NewConversations is the first messages each line may send per window
	// to recipients it has never messaged.
	NewConversations int
}

// Conversations is what the quotas ask chat.db: whether line and handle
// have a conversation already (the line messaged the handle, or the handle
// wrote to the line), and who is in a group chat. chatdb.Reader is one.
type Conversations interface {
	Contacted(ctx context.Context, line, handle string) (bool, error)
	ReadChat(ctx context.Context, chatGUID string) (*linev1.StoredChat, error)
}

// Quotas keeps the send and new-conversation quotas in state.db, so they
// hold across restarts, and counts each command id once: a reservation is
// keyed by the id, and the dispatcher reserves only for a command about to
// run for the first time (a redelivery is answered from the journal, a
// resumed command was counted when it first ran).
type Quotas struct {
	j      *Journal
	limits QuotaLimits
	lines  []string
	convs  Conversations
	now    func() time.Time
	log    *slog.Logger
}

// QuotaOptions configures Quotas.
type QuotaOptions struct {
	Limits QuotaLimits
	// Lines are the lines served, for health's per-line headroom.
	Lines []string
	// Conversations is chat.db; nil judges new conversations from the
	// journal alone.
	Conversations Conversations
	// Now is the clock (tests move it); nil is time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// NewQuotas returns the quota keeper over j's state.db.
func NewQuotas(j *Journal, o QuotaOptions) *Quotas {
	if o.Now == nil {
		o.Now = wallclock.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	lines := make([]string, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = command.NormalizeLine(l)
	}
	return &Quotas{j: j, limits: o.Limits, lines: lines, convs: o.Conversations, now: o.Now, log: o.Logger}
}

// quotaSchema is the quotas' part of state.db. quota_sends has one row per
// counted command in the window (older rows are pruned); quota_contacts
// has one row per (line, handle) the agent ever counted as a new
// conversation: its time counts it in the window, its presence says "an
// earlier command messaged this handle" for as long as the journal lives.
const quotaSchema = `
CREATE TABLE IF NOT EXISTS quota_sends (
	command_id TEXT PRIMARY KEY,
	line TEXT NOT NULL,
	at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quota_sends_at ON quota_sends(at);
CREATE TABLE IF NOT EXISTS quota_contacts (
	line TEXT NOT NULL,
	handle TEXT NOT NULL,
	command_id TEXT NOT NULL,
	at INTEGER NOT NULL,
	PRIMARY KEY (line, handle)
);
CREATE INDEX IF NOT EXISTS quota_contacts_at ON quota_contacts(line, at);
CREATE INDEX IF NOT EXISTS quota_contacts_command ON quota_contacts(command_id);
`

// countsAsSend reports whether cmd sends a message, the one thing the
// quotas count: a text, an attachment, or a chat created with a first
// message. Tapbacks, edits, unsends, typing, read marks, backgrounds,
// renames and look-ups are not messages (the provider counts "messages
// sent", and its API keeps them apart from messages), and a chat created
// without a message tells nobody anything yet.
func countsAsSend(cmd *linev1.Command) bool {
	switch k := cmd.GetKind().(type) {
	case *linev1.Command_SendText, *linev1.Command_SendAttachment:
		return true
	case *linev1.Command_CreateChat:
		return k.CreateChat.GetFirstMessage() != ""
	}
	return false
}

// Reserve counts cmd against the quotas before it runs, or refuses it
// with QUOTA_EXCEEDED and the time a slot frees. A command that sends
// nothing passes uncounted; an id already counted passes without counting
// again. The decision and the count are one journal write, so two commands
// racing for the last slot are decided one after the other: exactly one
// gets it. Any other failure is UNAVAILABLE (nothing was counted).
func (q *Quotas) Reserve(ctx context.Context, cmd *linev1.Command) *command.Error {
	if !countsAsSend(cmd) {
		return nil
	}
	id, line := cmd.GetId(), command.NormalizeLine(cmd.GetLine())
	// chat.db first, outside the write: it is another database, and its
	// answer only narrows what the journal then decides.
	var unknown []string
	for _, h := range q.recipients(ctx, cmd) {
		if q.convs != nil {
			known, err := q.convs.Contacted(ctx, line, h)
			if err != nil {
				// Judged from the journal alone: at worst a reply counts
				// as new, never the other way round.
				q.log.Warn("chat.db could not say whether this is a new conversation; the journal decides", "command", id, "err", err)
			}
			if known {
				continue
			}
		}
		unknown = append(unknown, h)
	}
	now := q.now()
	var refusal *command.Error
	err := q.j.write(func(tx *sql.Tx) error {
		refusal = nil
		var err error
		refusal, err = q.decide(tx, id, line, unknown, now)
		return err
	})
	if err != nil {
		return command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "the agent could not count the command against its quotas: %w", err)
	}
	return refusal
}

// decide is Reserve's write: refuse, or record the send and its new
// conversations.
func (q *Quotas) decide(tx *sql.Tx, id, line string, unknown []string, now time.Time) (*command.Error, error) {
	var counted bool
	if err := tx.QueryRow(`SELECT EXISTS(SELECT 1 FROM quota_sends WHERE command_id = ?)`, id).Scan(&counted); err != nil {
		return nil, err
	}
	if counted {
		return nil, nil
	}
	cutoff := now.Add(-QuotaWindow).UnixNano()
	if _, err := tx.Exec(`DELETE FROM quota_sends WHERE at <= ?`, cutoff); err != nil {
		return nil, err
	}
	if lim := q.limits.Sends; lim > 0 {
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM quota_sends`).Scan(&n); err != nil {
			return nil, err
		}
		if n >= lim {
			at, err := slotFrees(tx, `SELECT at FROM quota_sends ORDER BY at LIMIT 1 OFFSET ?`, n-lim)
			if err != nil {
				return nil, err
			}
			return exceeded(now, at, "this agent sent %d messages in the last 24 hours, its limit is %d", n, lim), nil
		}
	}
	var fresh []string
	for _, h := range unknown {
		var seen bool
		if err := tx.QueryRow(`SELECT EXISTS(SELECT 1 FROM quota_contacts WHERE line = ? AND handle = ?)`, line, h).Scan(&seen); err != nil {
			return nil, err
		}
		if !seen {
			fresh = append(fresh, h)
		}
	}
	if lim := q.limits.NewConversations; lim > 0 && len(fresh) > 0 {
		if len(fresh) > lim {
			return command.Errorf(linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED,
				"the command starts %d new conversations at once; line %s may start at most %d in 24 hours", len(fresh), line, lim), nil
		}
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM quota_contacts WHERE line = ? AND at > ?`, line, cutoff).Scan(&n); err != nil {
			return nil, err
		}
		if n+len(fresh) > lim {
			at, err := slotFrees(tx, `SELECT at FROM quota_contacts WHERE line = ?2 AND at > ?3 ORDER BY at LIMIT 1 OFFSET ?1`, n+len(fresh)-lim-1, line, cutoff)
			if err != nil {
				return nil, err
			}
			return exceeded(now, at, "line %s started %d new conversations in the last 24 hours, its limit is %d (this command would start %d)", line, n, lim, len(fresh)), nil
		}
	}
	at := now.UnixNano()
	if _, err := tx.Exec(`INSERT INTO quota_sends(command_id, line, at) VALUES(?, ?, ?)`, id, line, at); err != nil {
		return nil, err
	}
	for _, h := range fresh {
		if _, err := tx.Exec(`INSERT INTO quota_contacts(line, handle, command_id, at) VALUES(?, ?, ?, ?)`, line, h, id, at); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// slotFrees is when the counted row that query (its first argument the
// OFFSET) finds leaves the window.
func slotFrees(tx *sql.Tx, query string, offset int, args ...any) (time.Time, error) {
	var at int64
	if err := tx.QueryRow(query, append([]any{offset}, args...)...).Scan(&at); err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, at).Add(QuotaWindow), nil
}

// exceeded is the refusal: QUOTA_EXCEEDED with the time a slot frees,
// both as a moment and as the wait from now.
func exceeded(now, retryAt time.Time, format string, args ...any) *command.Error {
	e := command.Errorf(linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED, format, args...)
	e.Msg += "; a slot frees at " + retryAt.UTC().Format(time.RFC3339)
	e.RetryAt = retryAt
	e.RetryAfter = max(retryAt.Sub(now), time.Nanosecond)
	return e
}

// Release gives back what the command id reserved. The dispatcher calls it
// only when the driver was never called (the stop came first, the file
// could not be fetched, the journal could not mark it running): once
// Messages may have sent it, the slot stays taken, whatever the outcome.
func (q *Quotas) Release(id string) error {
	err := q.j.write(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM quota_sends WHERE command_id = ?`, id); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM quota_contacts WHERE command_id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("quota: release %q: %w", id, err)
	}
	return nil
}

// recipients are the handles cmd's message reaches, each in its one
// spelling: the participants it names, the person of a one-to-one chat
// GUID, or the members chat.db lists for a group (none when chat.db cannot
// say: the driver then refuses an unknown chat anyway).
func (q *Quotas) recipients(ctx context.Context, cmd *linev1.Command) []string {
	var hs []string
	switch {
	case cmd.GetCreateChat() != nil:
		hs = cmd.GetCreateChat().GetParticipants()
	case cmd.GetParticipants() != nil:
		hs = cmd.GetParticipants().GetHandles()
	case cmd.GetChatGuid() != "":
		g, err := command.ParseChatGUID(cmd.GetChatGuid())
		if err != nil {
			return nil
		}
		if !g.Group {
			hs = []string{g.ID}
			break
		}
		if q.convs == nil {
			return nil
		}
		chat, rerr := q.convs.ReadChat(ctx, cmd.GetChatGuid())
		if rerr != nil {
			return nil
		}
		for _, m := range chat.GetParticipants() {
			hs = append(hs, m.GetHandle())
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, h := range hs {
		if k := command.NormalizeLine(h); k != "" && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// Headroom is what is left of the quotas now.
type Headroom struct {
	// Sent is the messages counted in the window; SendsLeft is -1 without
	// a limit.
	Sent, SendsLeft int
	// NewConversations and NewConversationsLeft are per served line; left
	// is -1 without a limit.
	NewConversations, NewConversationsLeft map[string]int
	// LastSend is the newest counted send in the window (zero if none).
	LastSend time.Time
}

// Headroom reads the counts in the window.
func (q *Quotas) Headroom(ctx context.Context) (Headroom, error) {
	cutoff := q.now().Add(-QuotaWindow).UnixNano()
	h := Headroom{NewConversations: map[string]int{}, NewConversationsLeft: map[string]int{}}
	var last sql.NullInt64
	if err := q.j.db.QueryRowContext(ctx, `SELECT count(*), max(at) FROM quota_sends WHERE at > ?`, cutoff).Scan(&h.Sent, &last); err != nil {
		return h, fmt.Errorf("quota: %w", err)
	}
	if last.Valid {
		h.LastSend = time.Unix(0, last.Int64)
	}
	h.SendsLeft = left(q.limits.Sends, h.Sent)
	for _, l := range q.lines {
		var n int
		if err := q.j.db.QueryRowContext(ctx, `SELECT count(*) FROM quota_contacts WHERE line = ? AND at > ?`, l, cutoff).Scan(&n); err != nil {
			return h, fmt.Errorf("quota: %w", err)
		}
		h.NewConversations[l], h.NewConversationsLeft[l] = n, left(q.limits.NewConversations, n)
	}
	return h, nil
}

func left(limit, used int) int {
	if limit <= 0 {
		return -1
	}
	return max(limit-used, 0)
}

// Component is the quotas in health: OK with the headroom, DEGRADED while
// a line may start no new conversation (replies still go), DOWN while the
// agent may send no message at all (only what is not a message still
// runs), each until the window frees a slot.
func (q *Quotas) Component() *linev1.HealthComponent {
	hc, _ := q.Health()
	return hc
}

// component is Component from one reading of the counts (h, or err).
func (q *Quotas) component(h Headroom, err error) *linev1.HealthComponent {
	hc := &linev1.HealthComponent{Name: "quota", Status: linev1.HealthStatus_HEALTH_STATUS_OK}
	if err != nil {
		hc.Status, hc.Detail = linev1.HealthStatus_HEALTH_STATUS_DEGRADED, fmt.Sprintf("quota counts unreadable: %v", err)
		return hc
	}
	hc.Detail = "sends in 24h: " + headroomText(h.Sent, h.SendsLeft, q.limits.Sends)
	var full []string
	for _, l := range q.lines {
		hc.Detail += fmt.Sprintf("; new conversations %s: %s", l, headroomText(h.NewConversations[l], h.NewConversationsLeft[l], q.limits.NewConversations))
		if h.NewConversationsLeft[l] == 0 {
			full = append(full, l)
		}
	}
	switch {
	case h.SendsLeft == 0:
		hc.Status = linev1.HealthStatus_HEALTH_STATUS_DOWN
		if !h.LastSend.IsZero() {
			hc.Since = timestamppb.New(h.LastSend)
		}
		hc.Detail = "no sends left until the window frees a slot; " + hc.Detail
	case len(full) > 0:
		hc.Status = linev1.HealthStatus_HEALTH_STATUS_DEGRADED
		hc.Detail = fmt.Sprintf("no new conversations left on %v; ", full) + hc.Detail
	}
	return hc
}

func headroomText(used, left, limit int) string {
	if limit <= 0 {
		return fmt.Sprintf("%d, no limit", used)
	}
	return fmt.Sprintf("%d of %d, %d left", used, limit, left)
}

// errQuotaRefused reports whether err is a quota refusal (recorded as the
// command's result) rather than a failure to count (not recorded).
func errQuotaRefused(err *command.Error) bool {
	return err != nil && err.Code == linev1.ErrorCode_ERROR_CODE_QUOTA_EXCEEDED
}
