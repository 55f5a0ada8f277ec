package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/line-agent/line-agent/pkg/pgtest"
)

// TestRebind: ? placeholders become $1, $2, ... in order; a ? in a quoted
// string, a quoted identifier or a comment stays as it is.
func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT 1`:                             `SELECT 1`,
		`SELECT ? , ?`:                         `SELECT $1 , $2`,
		`WHERE a = '?' AND b = ?`:              `WHERE a = '?' AND b = $1`,
		`WHERE a = 'it''s ?' AND b = ?`:        `WHERE a = 'it''s ?' AND b = $1`,
		`SELECT "odd?col" FROM t WHERE x = ?`:  `SELECT "odd?col" FROM t WHERE x = $1`,
		"SELECT ? -- why?\nFROM t WHERE y = ?": "SELECT $1 -- why?\nFROM t WHERE y = $2",
		`SELECT /* ? */ ? FROM t`:              `SELECT /* ? */ $1 FROM t`,
		`IN (?, ?, ?) LIMIT ?`:                 `IN ($1, $2, $3) LIMIT $4`,
		`SELECT 'unterminated ?`:               `SELECT 'unterminated ?`,
	} {
		if got := rebind(in); got != want {
			t.Errorf("rebind(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestRedactDSN: a store URL is printed without its password, whether in
// the user part or a password parameter; one that does not parse is not
// printed at all.
func TestRedactDSN(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://relay@db.internal/line":                     "postgres://relay@db.internal/line",
		"postgres://relay:hunter2@db.internal/line":             "postgres://relay:xxxxx@db.internal/line",
		"postgresql://db/line?password=hunter2&sslmode=require": "postgresql://db/line?password=xxxxx&sslmode=require",
		"postgres://relay:hunter2@db:notaport/line":             "postgres://(unparsable store URL)",
	} {
		if got := redactDSN(in); got != want {
			t.Errorf("redactDSN(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestPostgresOpenErrorsHideThePassword: a wrong password, an unreachable
// server and a URL that does not parse each fail the open with a message
// that never holds the password given (nor the right one).
func TestPostgresOpenErrorsHideThePassword(t *testing.T) {
	good := postgresURL(t)
	u, _ := url.Parse(good)
	right, _ := u.User.Password()
	const wrong = "wr0ng-s3cret-pw"
	u.User = url.UserPassword(u.User.Username(), wrong)
	badPassword := u.String()
	u.Host = "127.0.0.1:1"
	unreachable := u.String() + "&connect_timeout=2"
	for name, dsn := range map[string]string{
		"wrong password":   badPassword,
		"unreachable":      unreachable,
		"unparsable":       "postgres://relay:" + wrong + "@db:notaport/line",
		"password param":   "postgres://127.0.0.1:1/line?password=" + wrong + "&connect_timeout=2",
		"bad parameter":    "postgres://relay:" + wrong + "@127.0.0.1:1/line?sslmode=sometimes",
		"bad timeout text": "postgres://relay:" + wrong + "@127.0.0.1:1/line?connect_timeout=soon",
	} {
		st, err := openStoreAt(t.TempDir(), dsn)
		if err == nil {
			st.close()
			t.Errorf("%s: the store opened", name)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, wrong) || strings.Contains(msg, right) {
			t.Errorf("%s: the error holds a password: %s", name, msg)
		} else {
			t.Logf("%s: %s", name, msg)
		}
	}
}

// postgresURL is the URL of a new database of the test cluster, the
// store not yet opened on it.
func postgresURL(t *testing.T) string {
	t.Helper()
	_, u := postgresStore(t)
	return u
}

// TestPostgresMigrationsRunOnce: relays starting at once against a new
// database create the schema and apply a later migration once between
// them (the advisory lock): a migration that fails when applied twice
// succeeds for all of them, and the version is the latest; a database at a
// version this relay does not know is refused.
func TestPostgresMigrationsRunOnce(t *testing.T) {
	u := pgtest.Database(t)
	db := unmigratedDB(t, u)
	ctx := context.Background()
	later := append(slices.Clone(migrations), migration{
		sqlite:   `ALTER TABLE agents ADD COLUMN test_only INTEGER`,
		postgres: `ALTER TABLE agents ADD COLUMN test_only BIGINT`,
	})
	const starts = 4
	errs := make(chan error, starts)
	var wg sync.WaitGroup
	for range starts {
		wg.Add(1)
		other := unmigratedDB(t, u)
		go func() {
			defer wg.Done()
			errs <- migratePostgres(ctx, other, later)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a concurrent start failed to migrate: %v", err)
		}
	}
	var v, rows int
	if err := db.QueryRowContext(ctx, `SELECT MAX(version), COUNT(*) FROM schema_version`).Scan(&v, &rows); err != nil || v != len(later)+1 || rows != 1 {
		t.Fatalf("schema_version %d (%d rows), %v; want %d in one row", v, rows, err, len(later)+1)
	}
	if _, err := db.ExecContext(ctx, `SELECT test_only FROM agents`); err != nil {
		t.Fatalf("the later migration's column: %v", err)
	}
	if err := migratePostgres(ctx, db, migrations); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("a database newer than the relay: %v; want it refused", err)
	}
}

// rawDB is a database/sql handle on u through the relay's PostgreSQL
// connector (so ? placeholders work), closed when t ends.
func rawDB(t *testing.T, u string) *sql.DB {
	t.Helper()
	st := openPostgresAt(t, u)
	return st.db
}

// unmigratedDB is rawDB without the store: nothing is migrated.
func unmigratedDB(t *testing.T, u string) *sql.DB {
	t.Helper()
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(pgConnector{stdlib.GetConnector(*cfg)})
	t.Cleanup(func() { db.Close() })
	return db
}

// TestPostgresRetriesADeadlock: a write job that deadlocks with another
// transaction (it holds one agent's row and wants a second, the other
// holds the second and wants the first) is the one PostgreSQL fails, with
// 40P01; the job is rolled back (with its transaction, as it ran alone),
// which lets the other transaction finish, and runs again, successfully,
// without the caller seeing the deadlock.
func TestPostgresRetriesADeadlock(t *testing.T) {
	st, u := postgresStore(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	for _, id := range []string{"agt_a", "agt_b"} {
		if _, err := st.createAgent(ctx, id, "s", "h", "v", nil, nil, "tok-"+id, now.Add(time.Hour), now); err != nil {
			t.Fatal(err)
		}
	}
	other := rawDB(t, u)
	if _, err := other.ExecContext(ctx, `ALTER DATABASE `+dbName(t, u)+` SET deadlock_timeout = '100ms'`); err != nil {
		t.Fatal(err)
	}
	// Connections opened from here on get the short timeout: a new store.
	st = openPostgresAt(t, u)
	otx, err := other.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer otx.Rollback()
	// The other transaction waits long before it looks for deadlocks, so
	// the job's is the session that finds this one.
	if _, err := otx.ExecContext(ctx, `SET LOCAL deadlock_timeout = '1min'`); err != nil {
		t.Fatal(err)
	}
	if _, err := otx.ExecContext(ctx, `UPDATE agents SET hostname = 'other' WHERE id = 'agt_b'`); err != nil {
		t.Fatal(err)
	}
	holdsA := make(chan struct{})
	otherDone := make(chan error, 1)
	var attempts int
	var failures []error // what each attempt that failed returned
	jobDone := make(chan error, 1)
	go func() {
		jobDone <- st.tx(ctx, func(tx *sql.Tx) error {
			attempts++
			err := func() error {
				if _, err := tx.ExecContext(ctx, `UPDATE agents SET hostname = 'job' WHERE id = 'agt_a'`); err != nil {
					return err
				}
				if attempts == 1 {
					close(holdsA)
					// Only once the other transaction waits for agt_a.
					if err := waitForLockWait(ctx, tx); err != nil {
						return err
					}
				}
				_, err := tx.ExecContext(ctx, `UPDATE agents SET version = 'job' WHERE id = 'agt_b'`)
				return err
			}()
			if err != nil {
				failures = append(failures, err)
			}
			return err
		})
	}()
	<-holdsA
	go func() {
		if _, err := otx.ExecContext(ctx, `UPDATE agents SET version = 'other' WHERE id = 'agt_a'`); err != nil {
			otherDone <- err
			return
		}
		otherDone <- otx.Commit()
	}()
	select {
	case err := <-otherDone:
		if err != nil {
			t.Fatalf("the other transaction: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the other transaction did not finish: the deadlock was not broken")
	}
	select {
	case err := <-jobDone:
		if err != nil {
			t.Fatalf("the job failed: %v; want it retried past the deadlock", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the job did not finish")
	}
	// Usually twice: once into the deadlock, once after. The job may take
	// the freed row back before the other transaction does and deadlock
	// again; every failure must be one the retry is for.
	if attempts < 2 || len(failures) != attempts-1 || slices.ContainsFunc(failures, func(err error) bool { return !pgRetryable(err) }) {
		t.Fatalf("the job ran %d times, failing with %v; want it run again after each deadlock", attempts, failures)
	}
	var host, version string
	if err := st.db.QueryRowContext(ctx, `SELECT hostname, version FROM agents WHERE id = 'agt_b'`).Scan(&host, &version); err != nil || host != "other" || version != "job" {
		t.Fatalf("agt_b: hostname %q version %q, %v; want both transactions' writes", host, version, err)
	}
}

// waitForLockWait returns once another session waits for a lock tx's
// session holds, at most 10 s.
func waitForLockWait(ctx context.Context, tx *sql.Tx) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("no session waited for a lock within 10 s")
}

// dbName is the database name in the URL u, quoted as an identifier.
func dbName(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return `"` + strings.TrimPrefix(p.Path, "/") + `"`
}

// TestPostgresClaimSkipsLockedCommands: a queued command another
// transaction has locked (claiming it, say) is skipped by a claim, which
// takes the next one instead of waiting; once that transaction is gone,
// the next claim takes the skipped one.
func TestPostgresClaimSkipsLockedCommands(t *testing.T) {
	st, u := postgresStore(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	const line = "+15550000001"
	if _, err := st.createAgent(ctx, "agt_1", "s", "h", "v", []string{line}, nil, "tok", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"first", "second"} {
		insertTestCommand(t, st, id, line, now.Add(time.Duration(i)))
	}
	other := rawDB(t, u)
	otx, err := other.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer otx.Rollback()
	var locked string
	if err := otx.QueryRowContext(ctx, `SELECT id FROM commands WHERE id = 'first' FOR UPDATE`).Scan(&locked); err != nil {
		t.Fatal(err)
	}
	claim := func() []string {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var rows []*commandRow
		if err := st.tx(cctx, st.claimCommandsFn(cctx, "agt_1", []string{lineKey(line)}, nil, false, 10, now, &rows)); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range rows {
			ids = append(ids, r.id)
		}
		return ids
	}
	if got := claim(); !slices.Equal(got, []string{"second"}) {
		t.Fatalf("claimed %v while first is locked; want [second]", got)
	}
	otx.Rollback()
	if got := claim(); !slices.Equal(got, []string{"first"}) {
		t.Fatalf("claimed %v after the lock went; want [first]", got)
	}
}

// insertTestCommand stores a queued send_text command id for line.
func insertTestCommand(t *testing.T, st *store, id, line string, created time.Time) {
	t.Helper()
	if ok, _, err := st.insertCommand(context.Background(), &commandRow{
		id: id, line: line, kind: "send_text", command: []byte("cmd-" + id),
		deadline: created.Add(time.Hour), created: created, fingerprint: "fp-" + id,
	}, lineKey(line), nil); err != nil || !ok {
		t.Fatalf("insert %s: created %v, %v", id, ok, err)
	}
}

// TestPostgresTwoStoresBindALineOnce: two relays on one database (two
// stores, two writers) enrolling agents with the same lines at the same
// moment: each line ends up bound to exactly one of them, and the other
// is told it is refused; neither enrollment fails.
func TestPostgresTwoStoresBindALineOnce(t *testing.T) {
	st1, u := postgresStore(t)
	st2 := openPostgresAt(t, u)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	const lines = 20
	for i := range lines {
		line := fmt.Sprintf("+1555000%04d", i)
		var wg sync.WaitGroup
		refused := make([][]refusedLine, 2)
		errs := make([]error, 2)
		for k, st := range []*store{st1, st2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("agt_%d_%d", i, k)
				refused[k], errs[k] = st.createAgent(ctx, id, "s", "h", "v", []string{line}, nil, "tok-"+id, now.Add(time.Hour), now)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("line %s: an enrollment failed: %v", line, err)
		}
		owner, err := st1.lineOwner(ctx, lineKey(line))
		if err != nil || owner == "" {
			t.Fatalf("line %s: owner %q, %v", line, owner, err)
		}
		loser := 1
		if owner == fmt.Sprintf("agt_%d_1", i) {
			loser = 0
		}
		if len(refused[loser]) != 1 || len(refused[1-loser]) != 0 {
			t.Fatalf("line %s bound to %s; refused %v and %v: want the other agent refused once", line, owner, refused[0], refused[1])
		}
	}
}

// TestPostgresTwoStoresNeverDispatchTwice: two relays on one database
// claiming the same agent's queue at once never dispatch one command
// twice, and between them take all of it.
func TestPostgresTwoStoresNeverDispatchTwice(t *testing.T) {
	st1, u := postgresStore(t)
	st2 := openPostgresAt(t, u)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	const line, n = "+15550000001", 60
	if _, err := st1.createAgent(ctx, "agt_1", "s", "h", "v", []string{line}, nil, "tok", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		insertTestCommand(t, st1, fmt.Sprintf("c%03d", i), line, now.Add(time.Duration(i)))
	}
	seen := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, st := range []*store{st1, st2, st1, st2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				var rows []*commandRow
				if err := st.tx(ctx, st.claimCommandsFn(ctx, "agt_1", []string{lineKey(line)}, nil, false, n, now, &rows)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, r := range rows {
					seen[r.id]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d commands dispatched; want all %d", len(seen), n)
	}
	for id, times := range seen {
		if times != 1 {
			t.Fatalf("command %s dispatched %d times", id, times)
		}
	}
}

// TestPostgresStoresWhatSQLiteStores: text with a NUL, which PostgreSQL
// text cannot hold, is stored with U+FFFD in its place instead of failing
// the write, and a flag written as a Go bool reads back as one.
func TestPostgresStoresWhatSQLiteStores(t *testing.T) {
	st, _ := postgresStore(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	const line = "+15550000001"
	if _, err := st.createAgent(ctx, "agt_1", "s", "h", "v", []string{line}, nil, "tok", now.Add(time.Hour), now); err != nil {
		t.Fatal(err)
	}
	insertTestCommand(t, st, "c1", line, now)
	var rows []*commandRow
	if err := st.tx(ctx, st.claimCommandsFn(ctx, "agt_1", []string{lineKey(line)}, nil, false, 10, now, &rows)); err != nil || len(rows) != 1 {
		t.Fatalf("claim: %d rows, %v", len(rows), err)
	}
	var changed bool
	if err := st.tx(ctx, st.updateCommandFn(ctx, "c1", "agt_1", stateAccepted, nil, "half\x00way", now, &changed)); err != nil || !changed {
		t.Fatalf("update with a NUL in its detail: changed %v, %v", changed, err)
	}
	if r, err := st.command(ctx, "c1"); err != nil || r.detail != "half\uFFFDway" {
		t.Fatalf("detail %q, %v; want the NUL replaced", r.detail, err)
	}
	if err := st.recordDisconnect(ctx, "agt_1", 0, now, now, true, "bye\x00"); err != nil {
		t.Fatal(err)
	}
	agents, err := st.listAgents(ctx)
	if err != nil || len(agents) != 1 || !agents[0].graceful || agents[0].reason != "bye\uFFFD" {
		t.Fatalf("agents %+v, %v; want a graceful disconnect", agents, err)
	}
}

// TestPostgresReplayedEventsSkipTheEventsLock: events the relay already
// stored, sent again (their ack was lost), are acknowledged at once while
// another replica's event writer holds the events lock; a new event waits
// for it, so relay_seq stays visible in order. Otherwise a repeat would
// queue behind every event writer of the fleet for nothing.
func TestPostgresReplayedEventsSkipTheEventsLock(t *testing.T) {
	u := pgtest.Database(t)
	srv := startRelay(t, "", Options{Store: u})
	a := enrollAgent(t, srv, "+15550001")
	a.connect()
	for i := uint64(1); i <= 3; i++ {
		a.event(i, fmt.Sprintf("k%d", i), "first")
	}
	for a.nextAck() != 3 {
	}
	ctx := context.Background()
	lock, err := rawDB(t, u).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(ctx, `SELECT pg_advisory_lock(`+eventsLockKey+`)`); err != nil {
		t.Fatal(err)
	}
	a.event(2, "k2", "again")
	a.event(3, "k3", "again")
	if got := a.nextAck(); got != 3 {
		t.Fatalf("replay acknowledged %d, want 3", got)
	}
	a.event(4, "k4", "new")
	// The two repeats may have been stored in two batches, each acked 3.
	for quiet := time.After(300 * time.Millisecond); ; {
		select {
		case f := <-a.cur.acks:
			if seq := f.GetEventAck().GetSequence(); seq > 3 {
				t.Fatalf("a new event was stored while another writer held the events lock: ack %d", seq)
			}
			continue
		case <-quiet:
		}
		break
	}
	if _, err := lock.ExecContext(ctx, `SELECT pg_advisory_unlock(`+eventsLockKey+`)`); err != nil {
		t.Fatal(err)
	}
	if got := a.nextAck(); got != 4 {
		t.Fatalf("ack %d after the lock was released, want 4", got)
	}
}
