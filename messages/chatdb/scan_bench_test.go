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
// ("idle") and with exactly one new incoming row ("one-new"). The chat.db is
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

	b.Run("idle", func(b *testing.B) {
		s, err := chatdb.NewScanStepper(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		d := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, _, err := s.Step(ctx); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t0))
		}
		report(b, d)
	})

	b.Run("one-new", func(b *testing.B) {
		st, err := sim.Create(path, sim.WithSeed(uint64(time.Now().UnixNano())))
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		c, err := st.EnsureChat(ctx, sim.ChatSpec{Participants: []string{"+15559990000"}})
		if err != nil {
			b.Fatal(err)
		}
		s, err := chatdb.NewScanStepper(ctx, path)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		d := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if _, err := st.Insert(ctx, sim.Msg{Chat: c.GUID, Text: "one more"}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			t0 := time.Now()
			rows, _, err := s.Step(ctx)
			if err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t0))
			if rows != 1 {
				b.Fatalf("step read %d rows, want the 1 new row", rows)
			}
		}
		report(b, d)
	})
}

func report(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(d[min(len(d)-1, len(d)*99/100)].Microseconds()), "p99-µs")
}
