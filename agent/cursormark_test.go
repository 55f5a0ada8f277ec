package agent

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Under a steady flow the outbox is never empty, yet marks keep coming:
// each is a cursor whose events were all acknowledged, never one ahead of
// the acks.
func TestCursorMarksFollowTheAcksUnderASteadyFlow(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j, err := OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	ev := func(k string) []*linev1.Event { return []*linev1.Event{{Key: k}} }
	ready := func() string {
		m, ok := j.marks.Ready()
		if !ok {
			return "none"
		}
		return string(m.cursor)
	}
	steps := []struct {
		commit string // event key and cursor "c<key>"; "" to ack instead
		ack    uint64
		want   string
	}{
		{commit: "1", want: "none"},
		{commit: "2", want: "none"},
		{ack: 1, want: "c1"}, // 1 is covered; 2 becomes the candidate
		{commit: "3", want: "c1"},
		{ack: 2, want: "c2"},
		{commit: "4", want: "c2"},
		{ack: 4, want: "c4"}, // the latest is covered: no need to wait for 3
	}
	for i, s := range steps {
		if s.commit != "" {
			if err := j.Commit(ctx, ev(s.commit), []byte("c"+s.commit)); err != nil {
				t.Fatal(err)
			}
		} else if err := j.Ack(ctx, s.ack); err != nil {
			t.Fatal(err)
		}
		if got := ready(); got != s.want {
			t.Fatalf("step %d (%+v): ready mark %s, want %s", i, s, got, s.want)
		}
	}
	// Only the cursor moved, everything acknowledged: ready at once.
	if err := j.Commit(ctx, nil, []byte("c5")); err != nil {
		t.Fatal(err)
	}
	if got := ready(); got != "c5" {
		t.Fatalf("cursor-only commit: ready %s, want c5", got)
	}
	j.Close()
	j, err = OpenJournal(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if m, ok := j.marks.Ready(); !ok || string(m.cursor) != "c5" || m.seq != 4 {
		t.Fatalf("after reopening: %+v %v, want c5 covering 4", m, ok)
	}
}

// The session sends a stream's first mark at once and later ones at most
// every CursorMarkEvery, each only after the ack it waits for.
func TestSessionSendsCursorMarksAfterTheirAcks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var acking atomic.Bool
		r := newFakeRelay(t, func(st *relayStream) error {
			if err := st.welcome(&linev1.Welcome{HeartbeatInterval: durationpb.New(time.Hour)}); err != nil {
				return err
			}
			for {
				f, err := st.srv.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				st.mu.Lock()
				st.frames = append(st.frames, f)
				st.mu.Unlock()
				if e := f.GetEvent(); e != nil && acking.Load() {
					if err := st.srv.Send(&linev1.RelayFrame{Frame: &linev1.RelayFrame_EventAck{EventAck: &linev1.EventAck{Sequence: e.GetSequence()}}}); err != nil {
						return err
					}
				}
			}
		})
		s := startSession(t, r, func(o *SessionOptions) { o.CursorMarkEvery = 5 * time.Second })
		marks := func() []string {
			var out []string
			for _, m := range sent(r.stream(1), (*linev1.AgentFrame).GetCursorMark) {
				out = append(out, string(m.GetChatdbCursor()))
			}
			return out
		}
		ctx := context.Background()
		if err := s.journal.Commit(ctx, nil, []byte("c0")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := marks(); len(got) != 1 || got[0] != "c0" {
			t.Fatalf("first mark: %q, want [c0] at once", got)
		}
		if err := s.journal.Commit(ctx, []*linev1.Event{{Key: "k1"}}, []byte("c1")); err != nil {
			t.Fatal(err)
		}
		advance(time.Minute)
		if got := marks(); len(got) != 1 {
			t.Fatalf("marks %q before event 1 was acknowledged", got)
		}
		acking.Store(true)
		if err := s.journal.Commit(ctx, []*linev1.Event{{Key: "k2"}}, []byte("c2")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := marks(); len(got) != 2 || got[1] != "c2" {
			t.Fatalf("after the ack of 2: marks %q, want c2 last", got)
		}
		if err := s.journal.Commit(ctx, []*linev1.Event{{Key: "k3"}}, []byte("c3")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := marks(); len(got) != 2 {
			t.Fatalf("marks %q within CursorMarkEvery of the last", got)
		}
		advance(5 * time.Second)
		if got := marks(); len(got) != 3 || got[2] != "c3" {
			t.Fatalf("after CursorMarkEvery: marks %q, want c3 last", got)
		}
	})
}
