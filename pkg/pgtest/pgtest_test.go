package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// TestMain: once the clusters are stopped, no goroutine of theirs is left.
func TestMain(m *testing.M) { goleak.VerifyTestMain(Main(m)) }

// TestClusterLifecycle: a cluster of its own listens on 127.0.0.1 only,
// with fsync off; a database made on it is usable and goes when dropped;
// Stop removes the cluster's directory and the server is gone.
func TestClusterLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx)
	if errors.Is(err, ErrNoPostgres) && os.Getenv("CI") == "" {
		t.Skipf("TestClusterLifecycle: skipped, %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	name, err := c.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.URL(name))
	if err != nil {
		t.Fatal(err)
	}
	for setting, want := range map[string]string{"listen_addresses": "127.0.0.1", "fsync": "off", "unix_socket_directories": c.dir} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", setting).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", setting, got, err, want)
		}
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.DropDatabase(ctx, name); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, c.URL(name)); err == nil {
		conn.Close(ctx)
		t.Fatalf("database %s still there after DropDatabase", name)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.dir); !os.IsNotExist(err) {
		t.Fatalf("cluster directory %s still there after Stop: %v", c.dir, err)
	}
	short, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if conn, err := pgx.Connect(short, c.URL("postgres")); err == nil {
		conn.Close(ctx)
		t.Fatal("the server still answers after Stop")
	}
}

// TestDatabaseHelper: Database hands a test a database of the shared
// cluster that it can write to.
func TestDatabaseHelper(t *testing.T) {
	url := Database(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
}

// TestRestart: a restart ends the sessions open before it, refuses new
// ones while the server is down, and comes back on the same URL with
// what was committed.
func TestRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx)
	if errors.Is(err, ErrNoPostgres) && os.Getenv("CI") == "" {
		t.Skipf("TestRestart: skipped, %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	name, err := c.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, err := pgx.Connect(ctx, c.URL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close(ctx)
	if _, err := before.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	var downErr error
	if err := c.Restart(ctx, func() {
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(short, c.URL(name))
		if err == nil {
			conn.Close(ctx)
		}
		downErr = err
	}); err != nil {
		t.Fatal(err)
	}
	if downErr == nil {
		t.Fatal("the server took a connection while it was down")
	}
	if _, err := before.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a session from before the restart still works")
	}
	after, err := pgx.Connect(ctx, c.URL(name))
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close(ctx)
	var x int
	if err := after.QueryRow(ctx, "SELECT x FROM t").Scan(&x); err != nil || x != 7 {
		t.Fatalf("after the restart: %d, %v; want the committed 7", x, err)
	}
}
