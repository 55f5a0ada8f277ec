package relay

import (
	"os"
	"sync"
	"testing"

	"github.com/line-agent/line-agent/pkg/pgtest"
)

// The store tests run against each backend: the embedded SQLite store and
// PostgreSQL, a database of its own per test on the test binary's
// throwaway cluster (pkg/pgtest; without PostgreSQL those subtests skip and
// say so, or fail when CI is set). The relay's end-to-end tests (startRelay)
// run on SQLite, and on PostgreSQL when LINE_TEST_STORE=postgres (make
// test-postgres).

// storeBackends names what eachStore runs against.
var storeBackends = []string{"sqlite", "postgres"}

// eachStore runs fn once per backend, as a subtest named for it. open opens
// the subtest's store, the same one every time it is called (to reopen it
// after a close); each store opened is closed when the subtest ends.
func eachStore(t *testing.T, fn func(t *testing.T, open func() *store)) {
	for _, backend := range storeBackends {
		t.Run(backend, func(t *testing.T) {
			dir, location := t.TempDir(), ""
			if backend == "postgres" {
				location = pgtest.Database(t)
			}
			fn(t, func() *store {
				t.Helper()
				st, err := openStoreAt(dir, location)
				if err != nil {
					t.Fatalf("open the %s store: %v", backend, err)
				}
				t.Cleanup(func() { st.close() })
				return st
			})
		})
	}
}

// postgresStore opens a store on a new PostgreSQL database (skipping or
// failing as pgtest says without PostgreSQL), closed when t ends, and
// returns its URL for more stores on the same database.
func postgresStore(t *testing.T) (*store, string) {
	t.Helper()
	url := pgtest.Database(t)
	return openPostgresAt(t, url), url
}

// openPostgresAt opens another store on the database url, closed when t
// ends: another process's view of the same data.
func openPostgresAt(t *testing.T, url string) *store {
	t.Helper()
	st, err := openStoreAt(t.TempDir(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.close() })
	return st
}

// testStores maps each data dir startRelay was given to its PostgreSQL
// database under LINE_TEST_STORE=postgres, so a relay restarted in the
// same dir finds what the first one stored.
var testStores struct {
	mu   sync.Mutex
	urls map[string]string // guarded by mu
}

// testStoreFor is the Options.Store startRelay gives a relay in dir: ""
// (relay.db in dir) unless LINE_TEST_STORE=postgres, then dir's own
// PostgreSQL database, dropped when the test that made it ends.
func testStoreFor(t *testing.T, dir string) string {
	t.Helper()
	if os.Getenv("LINE_TEST_STORE") != "postgres" {
		return ""
	}
	testStores.mu.Lock()
	url, ok := testStores.urls[dir]
	testStores.mu.Unlock()
	if ok {
		return url
	}
	url = pgtest.Database(t)
	testStores.mu.Lock()
	if testStores.urls == nil {
		testStores.urls = map[string]string{}
	}
	testStores.urls[dir] = url
	testStores.mu.Unlock()
	t.Cleanup(func() {
		testStores.mu.Lock()
		delete(testStores.urls, dir)
		testStores.mu.Unlock()
	})
	return url
}
