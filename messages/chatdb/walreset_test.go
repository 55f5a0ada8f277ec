package chatdb_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// writerEnv names the chat.db the writer process writes; set, the test
// binary runs TestWriterProcess as that process.
const writerEnv = "LINE_AGENT_CHATDB_TEST_WRITER"

// TestWriterProcess is not a test of its own: TestDataVersionAcrossWALResets
// runs the test binary again with writerEnv set, and this is then Messages
// in another process, writing chat.db with messages/sim on the commands it
// reads from stdin, one a line, answering "ok" or "err <why>" on stdout:
//
//	sent|delivered GUID     the in-place updates Messages makes
//	checkpoint MODE         PASSIVE, FULL, RESTART or TRUNCATE
//	recreate-wal            chat.db-wal deleted and made anew (new inode)
//	hold GUID               BEGIN IMMEDIATE, mark GUID sent, keep the write lock
//	release                 COMMIT what hold began
func TestWriterProcess(t *testing.T) {
	path := os.Getenv(writerEnv)
	if path == "" {
		t.Skip("run by TestDataVersionAcrossWALResets as its writer process")
	}
	ctx := context.Background()
	st, err := sim.Create(path)
	if err != nil {
		fmt.Println("err", err)
		return
	}
	defer st.Close()
	var held *sql.Tx
	var lock *sql.DB
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		verb, arg, _ := strings.Cut(in.Text(), " ")
		var err error
		switch verb {
		case "sent":
			err = st.MarkSent(ctx, arg)
		case "delivered":
			err = st.MarkDelivered(ctx, arg)
		case "checkpoint":
			err = st.Checkpoint(ctx, sim.CheckpointMode(arg))
		case "recreate-wal":
			err = st.RecreateWAL(ctx)
		case "hold":
			if lock, err = sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)&_txlock=immediate"); err == nil {
				if held, err = lock.BeginTx(ctx, nil); err == nil {
					_, err = held.ExecContext(ctx, `UPDATE message SET is_sent = 1, is_finished = 1 WHERE guid = ?`, arg)
				}
			}
		case "release":
			err = held.Commit()
			lock.Close()
		default:
			err = fmt.Errorf("unknown command %q", verb)
		}
		if err != nil {
			fmt.Println("err", err)
		} else {
			fmt.Println("ok")
		}
	}
}

// writerProc is the running writer process.
type writerProc struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Scanner
}

func startWriter(t *testing.T, path string) *writerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriterProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), writerEnv+"="+path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Error("the writer process did not exit")
		}
	})
	return &writerProc{t: t, in: in, out: bufio.NewScanner(out)}
}

// do runs one command in the writer process and waits for its answer.
func (w *writerProc) do(cmd string) {
	w.t.Helper()
	if _, err := fmt.Fprintln(w.in, cmd); err != nil {
		w.t.Fatal(err)
	}
	for w.out.Scan() { // the test binary may print its own lines too
		line := w.out.Text()
		if line == "ok" {
			return
		}
		if strings.HasPrefix(line, "err ") {
			w.t.Fatalf("writer: %s: %s", cmd, line)
		}
	}
	w.t.Fatalf("writer: %s: no answer (%v)", cmd, w.out.Err())
}

// mxFrame is the number of valid frames in the WAL as the wal-index header
// (chat.db-shm, bytes 16 to 19, native order) says: what a reader compares
// to decide whether the database changed.
func mxFrame(t *testing.T, path string) uint32 {
	t.Helper()
	b, err := os.ReadFile(path + "-shm")
	if err != nil || len(b) < 20 {
		t.Fatalf("read the wal-index: %v (%d bytes)", err, len(b))
	}
	return binary.NativeEndian.Uint32(b[16:20])
}

// TestDataVersionAcrossWALResets: one reader connection, kept across the
// WAL being reset and re-created by a writer in another process, must see
// every commit after it. The hard case is a reset after which the writer
// commits exactly as many frames as the reader saw before (same WAL size
// and frame count, different salts): data_version must still move.
func TestDataVersionAcrossWALResets(t *testing.T) {
	leakCheck(t)
	ctx := context.Background()
	path := t.TempDir() + "/chat.db"
	st, err := sim.Create(path, sim.WithSeed(11))
	must(t, err)
	c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15557770000"}})
	must(t, err)
	msgs := make([]sim.Msg, 6)
	for i := range msgs {
		msgs[i] = sim.Msg{Chat: c.GUID, FromMe: true, Text: fmt.Sprint("outgoing ", i)}
	}
	rows, err := st.InsertBatch(ctx, msgs)
	must(t, err)
	must(t, st.Close())

	w := startWriter(t, path)
	w.do("checkpoint TRUNCATE")
	s := newStepper(t, path, chatdb.StepperOptions{Mode: chatdb.StepIsolated})
	settle(t, s)

	expect := func(what, want string) {
		t.Helper()
		info := step(t, s)
		if info.Skipped || !hasKey(info.Keys, want) {
			t.Fatalf("%s: skipped %v, keys %v; want %s", what, info.Skipped, info.Keys, want)
		}
		if info := step(t, s); !info.Skipped {
			t.Fatalf("%s: then nothing committed, yet not skipped (%v)", what, info.Keys)
		}
	}

	w.do("sent " + rows[0].GUID)
	frames := mxFrame(t, path)
	expect("a commit", key(rows[0].GUID, "sent", "0"))

	for i, mode := range []string{"RESTART", "TRUNCATE"} {
		r := rows[1+i]
		// Reset, and the same update to the next row, with no look in
		// between: the reader last saw `frames` frames, and sees as many.
		w.do("checkpoint " + mode)
		w.do("sent " + r.GUID)
		if got := mxFrame(t, path); got != frames {
			t.Fatalf("after a %s reset the writer committed %d frames, not %d: the case is not the one meant", mode, got, frames)
		}
		expect("after a "+mode+" reset, the same frame count", key(r.GUID, "sent", "0"))
	}

	// Checkpoints alone change nothing a reader can see.
	for _, mode := range []string{"PASSIVE", "FULL", "RESTART", "TRUNCATE"} {
		w.do("checkpoint " + mode)
		if info := step(t, s); len(info.Keys) != 0 {
			t.Fatalf("checkpoint %s alone: %v", mode, info.Keys)
		}
	}
	w.do("delivered " + rows[0].GUID)
	expect("after the checkpoints", key(rows[0].GUID, "delivered", "0"))

	// The WAL re-created (new inode), as Messages does when it restarts.
	w.do("recreate-wal")
	w.do("sent " + rows[3].GUID)
	expect("after the WAL was re-created", key(rows[3].GUID, "sent", "0"))

	// chat.db locked by a write under way: the reader is not held up, sees
	// nothing of it, and sees it once committed.
	w.do("hold " + rows[4].GUID)
	for range 2 {
		if info := step(t, s); !info.Skipped || len(info.Keys) != 0 {
			t.Fatalf("while the write lock is held: %+v", info)
		}
	}
	w.do("release")
	expect("after the locked write committed", key(rows[4].GUID, "sent", "0"))
}
