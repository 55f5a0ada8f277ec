package relay

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// A quota refusal's wait counts from the moment it is read when the agent
// named the moment a slot frees: a result stored an hour ago must not
// still say "retry in a day".
func TestRetryAfterCountsToRetryAtFromNow(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		name string
		err  *linev1.CommandError
		secs int64
		ok   bool
	}{
		{"retry_at ahead, rounded up", &linev1.CommandError{RetryAt: timestamppb.New(now.Add(89500 * time.Millisecond)), RetryAfter: durationpb.New(24 * time.Hour)}, 90, true},
		{"retry_at passed", &linev1.CommandError{RetryAt: timestamppb.New(now.Add(-time.Minute))}, 0, true},
		{"retry_after alone", &linev1.CommandError{RetryAfter: durationpb.New(1500 * time.Millisecond)}, 2, true},
		{"neither", &linev1.CommandError{}, 0, false},
	} {
		if secs, ok := retryAfter(c.err, now); secs != c.secs || ok != c.ok {
			t.Errorf("%s: retryAfter = %d, %v; want %d, %v", c.name, secs, ok, c.secs, c.ok)
		}
	}
}
