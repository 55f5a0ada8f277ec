package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// A test binary shares one cluster, started by the first test that asks
// for a database, and stopped by Main's Run once every test has run.
var shared struct {
	once    sync.Once
	cluster *Cluster
	err     error
}

// dbWait bounds creating or dropping one database.
const dbWait = 30 * time.Second

// Database returns the URL of a new database on the test binary's shared
// cluster, dropped when t ends. Without PostgreSQL it skips t, saying why,
// or fails t when the environment variable CI is set.
func Database(t testing.TB) string {
	t.Helper()
	c := sharedCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), dbWait)
	defer cancel()
	name, err := c.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dbWait)
		defer cancel()
		if err := c.DropDatabase(ctx, name); err != nil {
			t.Errorf("%v", err)
		}
	})
	return c.URL(name)
}

// sharedCluster is the shared cluster, started on first use.
func sharedCluster(t testing.TB) *Cluster {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), startWait+10*time.Second)
		defer cancel()
		shared.cluster, shared.err = Start(ctx)
	})
	switch {
	case errors.Is(shared.err, ErrNoPostgres) && os.Getenv("CI") == "":
		t.Skipf("%s: skipped, %v; install PostgreSQL (Debian: apt-get install postgresql) to run it", t.Name(), shared.err)
	case errors.Is(shared.err, ErrNoPostgres):
		t.Fatalf("%s: %v, and CI is set: PostgreSQL tests must run in CI (.ci/run installs it)", t.Name(), shared.err)
	case shared.err != nil:
		t.Fatal(shared.err)
	}
	return shared.cluster
}

// TestingM is what a TestMain runs: *testing.M, or what wraps it.
type TestingM interface{ Run() int }

// Main wraps m so that its Run stops the shared cluster, if one was
// started, once the tests have run: a TestMain hands Main(m) to whatever it
// runs m with (goleak.VerifyTestMain(pgtest.Main(m))), so the cluster is
// gone before leaks are looked for.
func Main(m TestingM) TestingM { return mainM{m} }

type mainM struct{ m TestingM }

func (w mainM) Run() int {
	code := w.m.Run()
	if shared.cluster != nil {
		if err := shared.cluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stop the cluster: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}
