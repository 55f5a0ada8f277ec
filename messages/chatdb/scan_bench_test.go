package chatdb_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/line-agent/line-agent/messages/chatdb"
	"github.com/line-agent/line-agent/messages/sim"
)

// BenchmarkScanStep measures one change scan of the Tailer: with nothing new
// ("idle") and with exactly one new incoming row ("one-new"), each for the
// step before the incremental one ("baseline") and now ("new", and for a
// commit inside a burst "in-burst"). The chat.db is
// LINE_AGENT_BENCH_CHATDB when set (cmd/bench passes databases of 10k, 100k
// and 1M messages), otherwise a small one made here. Besides ns/op it
// reports the p50 and p99 of the individual steps.
func BenchmarkScanStep(b *testing.B) {
	ctx := context.Background()
	path := os.Getenv("LINE_AGENT_BENCH_CHATDB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "chat.db")
		st, err := sim.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15551230000"}})
		if err != nil {
			b.Fatal(err)
		}
		msgs := make([]sim.Msg, 1000)
		for i := range msgs {
			msgs[i] = sim.Msg{Chat: c.GUID, Text: "hello"}
		}
		if _, err := st.InsertBatch(ctx, msgs); err != nil {
			b.Fatal(err)
		}
		st.Close()
	}

	// "baseline" is the step as it was before the incremental one (forced
	// every time, the window read row by row); "new" is the step the Tailer
	// takes now for a commit that comes alone (new rows and the window), and
	// "in-burst" for a commit within WindowInterval of the last window read
	// (new rows only). They run here, in one process, one after the other,
	// so the machine's load falls on all of them alike.
	modes := []struct {
		name string
		mode chatdb.StepMode
	}{{"baseline", chatdb.StepBaseline}, {"new", chatdb.StepIsolated}, {"in-burst", chatdb.StepInBurst}}
	for _, m := range modes[:2] {
		b.Run("idle/"+m.name, func(b *testing.B) {
			s, err := chatdb.NewScanStepper(ctx, path, m.mode)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, _, _, err := s.Step(ctx); err != nil { // the first look reads everything
				b.Fatal(err)
			}
			d := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				_, _, skipped, err := s.Step(ctx)
				if err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
				if skipped != (m.mode != chatdb.StepBaseline) {
					b.Fatalf("%s step: skipped %v with nothing committed", m.name, skipped)
				}
			}
			report(b, d)
		})
	}

	for _, m := range modes {
		b.Run("one-new/"+m.name, func(b *testing.B) {
			st, err := sim.Create(path, sim.WithSeed(uint64(time.Now().UnixNano())))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15559990000"}})
			if err != nil {
				b.Fatal(err)
			}
			s, err := chatdb.NewScanStepper(ctx, path, m.mode)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, _, _, err := s.Step(ctx); err != nil { // the first look reads everything
				b.Fatal(err)
			}
			d := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				if _, err := st.Insert(ctx, sim.Msg{Chat: c.GUID, Text: "one more"}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				rows, _, skipped, err := s.Step(ctx)
				if err != nil {
					b.Fatal(err)
				}
				d = append(d, time.Since(t0))
				if rows != 1 || skipped {
					b.Fatalf("step read %d rows (skipped %v), want the 1 new row", rows, skipped)
				}
			}
			report(b, d)
		})
	}
}

func report(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(d[min(len(d)-1, len(d)*99/100)].Microseconds()), "p99-µs")
}
