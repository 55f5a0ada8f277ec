package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The LISTEN connection: one pgx connection per replica, outside
// database/sql's pool (a pooled connection may be closed or handed to a
// query at any time; a LISTEN belongs to its session), waiting for the
// announcements of the other replicas (store.announce). When it drops it
// is made again with backoff, and every (re)connection resyncs: what was
// announced while nobody listened is lost, so everything that could be
// waiting for it is woken once.

// Bounds of the LISTEN connection: how long a connect may take, how long
// it may be quiet before it is pinged (a server that went away without a
// word is noticed within listenPing plus the ping's own bound), and the
// backoff between attempts.
const (
	listenConnectWait = 10 * time.Second
	listenPing        = 15 * time.Second
	listenBackoffMin  = 100 * time.Millisecond
	listenBackoffMax  = 5 * time.Second
)

// runListen keeps the LISTEN connection up until ctx ends.
func (f *fleet) runListen(ctx context.Context) {
	backoff := listenBackoffMin
	for {
		up, err := f.listen(ctx)
		f.mu.Lock()
		f.listening = false
		f.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if up {
			backoff = listenBackoffMin
			f.log.Warn("replica: the LISTEN connection dropped; reconnecting (the poll covers the gap)", "err", err)
		} else {
			f.log.Debug("replica: LISTEN connection failed", "err", err, "retry_in", backoff)
		}
		// Full jitter, so replicas that lost the server together do not
		// come back together.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(backoff)) + 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listen connects, LISTENs, resyncs and delivers announcements until the
// connection fails or ctx ends. up says it got as far as listening.
func (f *fleet) listen(ctx context.Context) (up bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, listenConnectWait)
	conn, err := pgx.ConnectConfig(cctx, f.s.store.listen.Copy())
	cancel()
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	cctx, cancel = context.WithTimeout(ctx, listenConnectWait)
	_, err = conn.Exec(cctx, "LISTEN "+wakeChannel)
	cancel()
	if err != nil {
		return false, fmt.Errorf("LISTEN: %w", err)
	}
	f.mu.Lock()
	f.listening = true
	f.mu.Unlock()
	f.log.Debug("replica: listening for the other replicas")
	f.resync()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, nil
		case err != nil && pgconn.Timeout(err) && !conn.IsClosed():
			pctx, cancel := context.WithTimeout(ctx, listenConnectWait)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
		case err != nil:
			return true, err
		case n != nil:
			f.deliver(n.Payload)
		}
	}
}

// deliver turns one announcement into the wake-up it stands for. This
// replica's own are skipped: it woke its own waiters as it committed.
func (f *fleet) deliver(payload string) {
	origin, rest, _ := strings.Cut(payload, " ")
	if origin == f.s.replica {
		return
	}
	kind, arg, _ := strings.Cut(rest, " ")
	s := f.s
	switch kind {
	case wakeCommand:
		s.hub.kickLine(arg)
	case wakeEvents:
		s.feed.notify()
	case wakeDone:
		s.cmdDone.finished(arg, nil)
	case wakeFreed:
		s.hub.kickAgent(arg)
	case wakeStream:
		id, e, _ := strings.Cut(arg, " ")
		epoch, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			f.log.Warn("replica: an unreadable announcement", "kind", kind, "err", err)
			return
		}
		if s.hub.fence(id, epoch) {
			f.log.Info("ending a stream: the agent connected again, to another replica", "agent_id", id, "newer_epoch", epoch)
		}
	default:
		f.log.Debug("replica: an announcement of an unknown kind (a newer replica?)", "kind", kind)
	}
}

// errNotListening is listening's answer when the LISTEN connection is down.
var errNotListening = errors.New("relay: not listening for the other replicas")

// listeningErr is nil while the LISTEN connection is up (tests wait for
// it before they count on announcements).
func (f *fleet) listeningErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.listening {
		return errNotListening
	}
	return nil
}
