package relay

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"time"
)

// A SQLite store in WAL mode appends every commit to relay.db-wal; a
// checkpoint copies those pages back into relay.db and fsyncs it. Left to
// SQLite, the commit that takes the WAL past wal_autocheckpoint pages runs
// the checkpoint itself, on the writer's goroutine: every job queued
// behind that batch (submits, claims, results) waits several milliseconds
// for a copy it has nothing to do with. Measured at 1,300 commands a
// second, that was most of the tail once garbage collection was out of
// the way (docs/benchmarks.md, "WAL checkpoints off the write path").
//
// So the relay checkpoints on a goroutine of its own, after commits, at
// most once per checkpointGap, in PASSIVE mode: it never waits for a lock
// and never holds the writer up. Small and often is the point: each copy
// is a few pages and the WAL, fully copied, starts again from its
// beginning; a gap of a second measured as badly as SQLite's own
// checkpoints. The writer's automatic checkpoint stays, at
// walBackstopPages, only for when these fall behind (a reader holding an
// old snapshot keeps a checkpoint from finishing), so the WAL stays
// bounded whatever happens here.
const (
	// checkpointGap is the least time between two background checkpoints.
	checkpointGap = 20 * time.Millisecond
	// walBackstopPages is the writer's own automatic checkpoint, in pages
	// (4 KiB each by default): twice SQLite's default, far above what
	// checkpointGap lets gather.
	walBackstopPages = 2000
)

// checkpointer runs the store's background checkpoints (see above).
type checkpointer struct {
	db    *sql.DB
	kick  chan struct{}
	stop  chan struct{}
	done  sync.WaitGroup
	once  sync.Once // close stops the goroutine once
	runs  atomic.Uint64 // checkpoints run
	fails atomic.Uint64 // checkpoints that returned an error
	// wait is the pause after each checkpoint: checkpointGap.
	wait time.Duration
}

// startCheckpointer starts db's background checkpoints, one at most per
// gap; the store's writer calls wrote after each batch.
func startCheckpointer(db *sql.DB, gap time.Duration) *checkpointer {
	c := &checkpointer{db: db, kick: make(chan struct{}, 1), stop: make(chan struct{}), wait: gap}
	c.done.Add(1)
	go c.run()
	return c
}

// wrote says a commit added pages to the WAL. It never blocks: it runs on
// the writer's goroutine.
func (c *checkpointer) wrote(error) {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer c.done.Done()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		c.checkpoint()
		select {
		case <-c.stop:
			return
		case <-time.After(c.wait):
		}
	}
}

// checkpoint copies what the WAL holds into the database, as far as no
// reader's snapshot still needs it. An error is counted and otherwise
// left: the next commit tries again, and the writer's backstop bounds the
// WAL meanwhile.
func (c *checkpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var busy, logged, copied int64
	c.runs.Add(1)
	if err := c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logged, &copied); err != nil {
		c.fails.Add(1)
	}
}

// close stops the checkpoints (a second call does nothing, as with the
// store's close); SQLite checkpoints once more when the last connection
// closes.
func (c *checkpointer) close() {
	c.once.Do(func() { close(c.stop) })
	c.done.Wait()
}
