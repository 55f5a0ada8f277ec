package agent

import (
	"testing"
	"time"
)

func TestBackoffFullJitterGrowsToCapAndResets(t *testing.T) {
	r := 0.999
	b := Backoff{Base: time.Second, Cap: 60 * time.Second, Rand: func() float64 { return r }}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i, w := range want {
		if c := b.Ceiling(); c != w*time.Second {
			t.Fatalf("attempt %d: ceiling %v, want %v", i, c, w*time.Second)
		}
		if d := b.Next(); d >= w*time.Second || d < w*time.Second*99/100 {
			t.Fatalf("attempt %d: wait %v, want just under %v", i, d, w*time.Second)
		}
	}
	r = 0
	if d := b.Next(); d != 0 {
		t.Fatalf("full jitter must reach 0, got %v", d)
	}
	b.Reset()
	if c := b.Ceiling(); c != time.Second {
		t.Fatalf("after Reset ceiling %v, want 1s", c)
	}
	for range 200 {
		b.Next() // must not overflow however long the relay is away
	}
	if c := b.Ceiling(); c != 60*time.Second {
		t.Fatalf("after many attempts ceiling %v, want the cap", c)
	}
}
