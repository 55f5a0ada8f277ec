package applescript

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// runLog is a RunObserver that writes down what it hears.
type runLog struct {
	mu     sync.Mutex
	events []string // guarded by mu
}

func (l *runLog) OsascriptStarted() { l.add("started") }

func (l *runLog) OsascriptEnded(e RunEnd) {
	l.add(map[RunEnd]string{RunAnswered: "answered", RunTimedOut: "timed out", RunAbandoned: "abandoned"}[e])
}

func (l *runLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, s)
}

func (l *runLog) got() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// Options.Runs hears every osascript run of a send and how it ended: an
// AppleScript error is an answer, a run killed at Timeout or at the
// command's deadline timed out, a cancelled one says nothing; open(1)
// launching Messages after -600 is not an osascript run.
func TestRunObserver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		timeout time.Duration
		ctx     func() (context.Context, context.CancelFunc)
		want    []string
	}{
		{"sent", nil, 0, nil, []string{"started", "answered"}},
		{"AppleScript error", []string{"FAKEOSA_FAIL=-1728"}, 0, nil, []string{"started", "answered"}},
		{"Messages launched after -600", []string{"FAKEOSA_FAIL_ONCE=-600"}, 0, nil, []string{"started", "answered", "started", "answered"}},
		{"killed at Timeout", []string{"FAKEOSA_HANG=1"}, 400 * time.Millisecond, nil, []string{"started", "timed out"}},
		{"the command's deadline", []string{"FAKEOSA_HANG=1"}, 0, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 400*time.Millisecond)
		}, []string{"started", "timed out"}},
		{"cancelled", []string{"FAKEOSA_HANG=1"}, 0, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(400*time.Millisecond, cancel)
			return ctx, cancel
		}, []string{"started", "abandoned"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &runLog{}
			h := newHarness(t, tc.env, func(o *Options) {
				o.Runs = l
				if tc.timeout > 0 {
					o.Timeout = tc.timeout
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()
			_, _ = h.sender.Execute(ctx, textTo(chatOne, "hi"), func(*linev1.CommandUpdate) {})
			if got := l.got(); !slices.Equal(got, tc.want) {
				t.Fatalf("heard %v, want %v", got, tc.want)
			}
		})
	}
}
