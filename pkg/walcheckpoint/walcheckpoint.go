// Package walcheckpoint copies a SQLite database's write-ahead log back
// into the database on a goroutine of its own, so no commit pays for it.
//
// Why: in WAL mode every commit appends to the -wal file, and a checkpoint
// copies those pages into the database and syncs it. Left to SQLite, the
// commit that takes the WAL past wal_autocheckpoint pages runs the
// checkpoint itself, on the writer's goroutine (pkg/groupcommit): every
// write queued behind that batch waits several milliseconds for a copy it
// has nothing to do with. Measured on the relay's store at 1,300 commands a
// second, that was most of the latency tail once garbage collection was
// out of the way (docs/benchmarks.md, "WAL checkpoints off the write
// path").
//
// A Checkpointer runs a PASSIVE checkpoint after commits (Wrote), at most
// once per gap: PASSIVE never waits for a lock and never holds a writer
// up. Small and often is the point: each copy is a few pages, and a WAL
// copied to its end starts again from its beginning; a gap of a second
// measured as badly as SQLite's own checkpoints. The writer's automatic
// checkpoint stays, at BackstopPages (Pragma), for when these fall behind
// (a reader holding an old snapshot keeps a checkpoint from finishing), so
// the WAL stays bounded whatever happens here.
package walcheckpoint

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// Gap is the least time between two checkpoints that suits a busy
	// writer: what 20 ms of commits wrote is a short copy.
	Gap = 20 * time.Millisecond
	// BackstopPages is where the writer's own automatic checkpoint stays,
	// in pages (4 KiB each by default): twice SQLite's default, far above
	// what Gap lets gather.
	BackstopPages = 2000
	// timeout bounds one checkpoint (a PASSIVE one never waits for locks;
	// this is for a disk that stopped answering).
	timeout = 10 * time.Second
)

// Pragma is the _pragma value of a modernc.org/sqlite DSN that moves the
// writer's automatic checkpoint to BackstopPages. Every connection needs
// it (the setting is per connection), hence the DSN.
func Pragma() string { return fmt.Sprintf("wal_autocheckpoint(%d)", BackstopPages) }

// Checkpointer runs one database's background checkpoints.
type Checkpointer struct {
	db    *sql.DB
	gap   time.Duration
	kick  chan struct{}
	stop  chan struct{}
	once  sync.Once
	done  sync.WaitGroup
	runs  atomic.Uint64
	fails atomic.Uint64
}

// Start starts db's background checkpoints, one at most per gap; the
// database's writer calls Wrote after each commit.
func Start(db *sql.DB, gap time.Duration) *Checkpointer {
	c := &Checkpointer{db: db, gap: gap, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	c.done.Add(1)
	go c.run()
	return c
}

// Wrote says a commit (or a try at one: err is ignored) may have added
// pages to the WAL. It never blocks, so it fits groupcommit's AfterBatch,
// which runs on the writer's goroutine.
func (c *Checkpointer) Wrote(error) {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Runs counts the checkpoints run; Failures those that returned an error,
// which are otherwise left: the next commit tries again, and the writer's
// backstop bounds the WAL meanwhile. For metrics.
func (c *Checkpointer) Runs() uint64     { return c.runs.Load() }
func (c *Checkpointer) Failures() uint64 { return c.fails.Load() }

// Close stops the checkpoints; a second call does nothing. SQLite
// checkpoints once more when the database's last connection closes.
func (c *Checkpointer) Close() {
	c.once.Do(func() { close(c.stop) })
	c.done.Wait()
}

func (c *Checkpointer) run() {
	defer c.done.Done()
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		c.checkpoint()
		pause.Reset(c.gap)
		select {
		case <-c.stop:
			return
		case <-pause.C:
		}
	}
}

// checkpoint copies what the WAL holds into the database, as far as no
// reader's snapshot still needs it.
func (c *Checkpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var busy, logged, copied int64
	c.runs.Add(1)
	if err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logged, &copied); err != nil {
		c.fails.Add(1)
	}
}
