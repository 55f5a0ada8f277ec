//go:build chaos

package wallclock

import (
	"os"
	"strings"
	"sync"
	"time"
)

// Now is the current wall-clock time, moved by the offset (a Go duration
// such as "2h" or "-90m") in the file LINE_CHAOS_CLOCK_OFFSET_FILE names,
// read again at most every 50 ms: the suite jumps the clock by rewriting
// that file. No file, or no variable, is no offset. The monotonic reading
// is untouched, as a real clock jump leaves it.
func Now() time.Time { return time.Now().Add(offset()) }

var (
	mu       sync.Mutex
	cached   time.Duration
	readAt   time.Time
	fileName = os.Getenv("LINE_CHAOS_CLOCK_OFFSET_FILE")
)

func offset() time.Duration {
	if fileName == "" {
		return 0
	}
	mu.Lock()
	defer mu.Unlock()
	if time.Since(readAt) < 50*time.Millisecond {
		return cached
	}
	readAt = time.Now()
	b, err := os.ReadFile(fileName)
	if err != nil {
		cached = 0
		return 0
	}
	d, err := time.ParseDuration(strings.TrimSpace(string(b)))
	if err != nil {
		return cached
	}
	cached = d
	return d
}
