package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Copying a whole store to another (line-relay store copy): the way a
// relay that began on the embedded SQLite store moves to PostgreSQL when
// its fleet outgrows one machine (docs/scaling.md), keeping its agents'
// credentials, lines, commands, events and cursors, so no Mac is enrolled
// again and no application's cursor breaks.

// copiedTables are the store's tables in the order they are copied (a
// row's foreign keys before it). Not copied: schema_version and SQLite's
// user_version (each store is migrated on open), sqlite_sequence (the
// event head is carried over on its own), relay_replicas (each replica's
// liveness, rewritten as soon as one serves). The schema test checks that
// every table is one or the other.
var copiedTables = []string{
	"project_tokens", "agents", "access_tokens", "line_bindings", "commands",
	"events", "events_pruned", "blob_chunks", "api_tokens", "pool_assignments", "uploads",
}

// notCopiedTables are the tables a copy leaves out on purpose (see
// copiedTables).
var notCopiedTables = []string{"schema_version", "relay_replicas", "sqlite_sequence"}

// ErrStoreNotEmpty is CopyStore's refusal of a destination that holds
// rows already: a copy never merges into or overwrites another relay's
// state.
var ErrStoreNotEmpty = errors.New("relay: the destination store is not empty")

// ErrStoreInUse is CopyStore's refusal of a source a relay seems to be
// serving: rows written during the copy would be lost with the old store.
var ErrStoreInUse = errors.New("relay: the source store is in use")

// ErrSameStore is CopyStore's refusal to copy a store onto itself.
var ErrSameStore = errors.New("relay: source and destination are the same store")

// storeInUseWindow is how recently an agent must have been seen, with no
// disconnect recorded since, for the source to count as served: twice
// the default heartbeat, so a relay stopped with SIGKILL (which records
// no disconnect) holds a copy back for that long only.
const storeInUseWindow = 2 * DefaultHeartbeatInterval

// CopyReport is what CopyStore copied.
type CopyReport struct {
	// Tables are the row counts, in copiedTables' order.
	Tables []TableRows
	// EventHead is the highest event sequence ever given, carried over so
	// the destination numbers new events after every cursor handed out.
	EventHead int64
	// To is the destination, fit to print (no password).
	To string
}

// TableRows is one table's row count.
type TableRows struct {
	Name string
	Rows int64
}

// CopyStore copies every row of the store at from into the store at to,
// which must be empty (a new database or file; it is migrated first):
// in one transaction on each side, so the copy is whole or absent. The
// relay must not be serving from meanwhile (ErrStoreInUse when an agent
// looks connected). from is left as it was, a backup. progress, when not
// nil, hears each table once its rows are in (not yet committed), so an
// operator moving a large store sees it advance.
func CopyStore(ctx context.Context, from, to Storage, now time.Time, progress func(TableRows)) (*CopyReport, error) {
	if from.Store == to.Store && from.DataDir == to.DataDir {
		return nil, ErrSameStore
	}
	src, err := from.open(false)
	if err != nil {
		return nil, fmt.Errorf("open the source store: %w", err)
	}
	defer src.close()
	dst, err := to.open(true)
	if err != nil {
		return nil, fmt.Errorf("open the destination store: %w", err)
	}
	defer dst.close()
	if src.where == dst.where {
		return nil, ErrSameStore
	}
	if err := src.notServed(ctx, now); err != nil {
		return nil, err
	}

	stx, err := src.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read the source store: %w", err)
	}
	defer stx.Rollback()
	dtx, err := dst.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("write the destination store: %w", err)
	}
	defer dtx.Rollback()
	for _, t := range copiedTables {
		var has bool
		if err := dtx.QueryRowContext(ctx, `SELECT EXISTS(SELECT 1 FROM `+t+`)`).Scan(&has); err != nil {
			return nil, fmt.Errorf("look at the destination's %s: %w", t, err)
		}
		if has {
			return nil, fmt.Errorf("%w: its %s table has rows (%s); copy into a new database", ErrStoreNotEmpty, t, dst.where)
		}
	}
	rep := &CopyReport{To: dst.where}
	for _, t := range copiedTables {
		cols, err := dst.columns(ctx, dtx, t)
		if err != nil {
			return nil, fmt.Errorf("columns of %s: %w", t, err)
		}
		n, err := copyTable(ctx, stx, dtx, dst.d, t, cols)
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", t, err)
		}
		var want int64
		if err := stx.QueryRowContext(ctx, `SELECT count(*) FROM `+t).Scan(&want); err != nil {
			return nil, fmt.Errorf("count the source's %s: %w", t, err)
		}
		if n != want {
			return nil, fmt.Errorf("copy %s: %d rows copied of %d", t, n, want)
		}
		rep.Tables = append(rep.Tables, TableRows{Name: t, Rows: n})
		if progress != nil {
			progress(rep.Tables[len(rep.Tables)-1])
		}
	}
	if err := stx.QueryRowContext(ctx, src.d.eventHead).Scan(&rep.EventHead); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("the source's event head: %w", err)
	}
	if err := dst.carryCounters(ctx, dtx, rep.EventHead); err != nil {
		return nil, fmt.Errorf("the destination's counters: %w", err)
	}
	if err := dtx.Commit(); err != nil {
		return nil, fmt.Errorf("commit the copy: %w", err)
	}
	return rep, nil
}

// notServed fails with ErrStoreInUse when an agent was seen lately with
// no disconnect recorded since: a relay is (or was until a moment ago)
// serving this store.
func (st *store) notServed(ctx context.Context, now time.Time) error {
	var id string
	var seen int64
	err := st.db.QueryRowContext(ctx, `SELECT id, last_seen FROM agents WHERE disconnected_at < last_seen AND last_seen > ? ORDER BY last_seen DESC LIMIT 1`,
		now.Add(-storeInUseWindow).UnixNano()).Scan(&id, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look for connected agents: %w", err)
	}
	return fmt.Errorf("%w: agent %s was connected %s ago; stop every relay serving %s first (a relay killed without a clean stop counts as serving for %s after its last agent was seen)",
		ErrStoreInUse, id, now.Sub(time.Unix(0, seen)).Round(time.Second), st.where, storeInUseWindow)
}

// column is one column of a table as the destination has it.
type column struct {
	name  string
	bytes bool // BYTEA or BLOB: a text value is stored as its bytes
}

// columns lists table's columns in the destination's schema, and for
// commands its rowid too (SQLite's implicit one, PostgreSQL's column of
// that name): the queue breaks created_at ties by it.
func (st *store) columns(ctx context.Context, tx *sql.Tx, table string) ([]column, error) {
	q := `SELECT name, upper(type) FROM pragma_table_info(?) ORDER BY cid`
	if st.d == postgresDialect {
		q = `SELECT column_name, upper(data_type) FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position`
	}
	rows, err := tx.QueryContext(ctx, q, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var cols []column
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return nil, err
		}
		cols = append(cols, column{name: name, bytes: typ == "BYTEA" || typ == "BLOB"})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("no table %s", table)
	}
	if table == "commands" && !slices.ContainsFunc(cols, func(c column) bool { return c.name == "rowid" }) {
		cols = append(cols, column{name: "rowid"})
	}
	return cols, nil
}

// copyRowsPerInsert bounds one INSERT's rows so its arguments stay far
// below either database's limit on bound parameters.
const copyArgsPerInsert = 4000

// copyTable copies table's rows, in the source's order of insertion, a
// multi-row INSERT at a time, and returns how many it copied.
func copyTable(ctx context.Context, stx, dtx *sql.Tx, d *dialect, table string, cols []column) (int64, error) {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	list := strings.Join(names, ", ")
	rows, err := stx.QueryContext(ctx, `SELECT `+list+` FROM `+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	override := ""
	if d == postgresDialect && (table == "commands" || table == "events") {
		// Their identity columns take the source's values, so cursors
		// and the queue's order survive the move.
		override = " OVERRIDING SYSTEM VALUE"
	}
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	perInsert := max(1, copyArgsPerInsert/len(cols))
	var (
		n    int64
		args []any
	)
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		k := len(args) / len(cols)
		q := `INSERT INTO ` + table + `(` + list + `)` + override + ` VALUES ` + strings.TrimSuffix(strings.Repeat(one+", ", k), ", ")
		if _, err := dtx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		n += int64(k)
		args = args[:0]
		return nil
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		for i, c := range cols {
			if s, ok := vals[i].(string); ok && c.bytes {
				vals[i] = []byte(s)
			}
		}
		args = append(args, vals...)
		if len(args)/len(cols) >= perInsert {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	return n, flush()
}

// carryCounters sets the destination's counters past what the copy
// brought: the next event's relay_seq after head (the source's highest
// ever, which may be above every row left after pruning) and, on
// PostgreSQL, the next command's rowid after the copied ones.
func (st *store) carryCounters(ctx context.Context, tx *sql.Tx, head int64) error {
	if st.d == postgresDialect {
		if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('events', 'relay_seq'), GREATEST(?, (SELECT COALESCE(MAX(relay_seq), 0) FROM events), 1), ? > 0 OR EXISTS(SELECT 1 FROM events))`, head, head); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('commands', 'rowid'), GREATEST((SELECT COALESCE(MAX(rowid), 0) FROM commands), 1), EXISTS(SELECT 1 FROM commands))`); err != nil {
			return err
		}
		// PostgreSQL reads its event head from the rows (dialect.eventHead).
		// A source whose newest events went without a pruning mark (pruned
		// before schema 4 kept marks) has a head above them all: a mark
		// under no line keeps it, so no cursor handed out before the move
		// reads as one from the future. prunedThrough asks for real lines
		// only, so the mark holds nothing back.
		_, err := tx.ExecContext(ctx, `INSERT INTO events_pruned(line_key, through_seq)
			SELECT '', CAST(? AS BIGINT) WHERE CAST(? AS BIGINT) > GREATEST((SELECT COALESCE(MAX(relay_seq), 0) FROM events), (SELECT COALESCE(MAX(through_seq), 0) FROM events_pruned))
			ON CONFLICT(line_key) DO UPDATE SET through_seq = GREATEST(events_pruned.through_seq, excluded.through_seq)`, head, head)
		return err
	}
	if head <= 0 {
		return nil
	}
	// SQLite's AUTOINCREMENT counter: the row exists once an event was
	// inserted; otherwise it is made.
	res, err := tx.ExecContext(ctx, `UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'events'`, head)
	if err != nil {
		return err
	}
	if k, err := res.RowsAffected(); err != nil || k > 0 {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO sqlite_sequence(name, seq) VALUES('events', ?)`, head)
	return err
}
