package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// TestChatDBLockedWhileBusy holds chat.db's write lock (another process in
// a long transaction, as Messages' own maintenance or a backup tool does)
// again and again while messages arrive and sends go out: the reader and
// the simulated Messages wait and retry, and nothing is lost, doubled or
// acknowledged falsely.
func TestChatDBLockedWhileBusy(t *testing.T) {
	if testing.Short() {
		t.Skip("real processes")
	}
	n, locks := scale(30, 200), scale(3, 10)
	const hold = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	st := startStack(ctx, t, "--sim-reply-delay", "30s")
	line := st.Agent.Lines[0]
	w := writer(t, st)

	locker, err := sql.Open("sqlite", "file:"+st.ChatDB()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close()
	locker.SetMaxOpenConns(1)

	cmds := make([]*linev1.Command, n)
	for i := range cmds {
		cmds[i] = sendText("locked", i, line)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := range locks {
			time.Sleep(300 * time.Millisecond)
			tx, err := locker.BeginTx(ctx, nil)
			if err == nil {
				// BEGIN IMMEDIATE by hand: take the write lock and keep it.
				_, err = tx.ExecContext(ctx, `UPDATE chat SET display_name = display_name WHERE ROWID = -1`)
			}
			if err != nil {
				t.Errorf("lock %d: %v", k, err)
				return
			}
			time.Sleep(hold)
			if err := tx.Commit(); err != nil {
				t.Errorf("unlock %d: %v", k, err)
			}
		}
	}()
	var texts []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		texts = receive(ctx, t, w, peers[1], "busy", n)
	}()
	submitAll(ctx, t, st, cmds, time.Duration(locks)*(hold+300*time.Millisecond)/time.Duration(n))
	wg.Wait()

	fin := finals(ctx, st, cmds, 3*time.Minute)
	r := judge(t, cmds, fin, outgoingTexts(ctx, t, st.ChatDB()))
	lost, dup := inboundOnce(ctx, t, st, texts, 2*time.Minute)
	r.lost, r.duplicated = r.lost+lost, r.duplicated+dup
	r.fault, r.runs = "chat.db write-locked by another process", locks
	r.commands += len(texts)
	r.note = fmt.Sprintf("%d sends and %d incoming; lock held %s each time", n, len(texts), hold)
	record(t, r)
}
