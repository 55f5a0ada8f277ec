package servertime

import (
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

// The relay's time is read from the header or, for an answer refused
// before any message (trailers only), the trailer; a value that is not a
// time is no time.
func TestFrom(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)
	stamp := metadata.Pairs(Header, at.Format(time.RFC3339Nano))
	for _, mds := range [][]metadata.MD{{stamp, nil}, {nil, stamp}, {metadata.Pairs("other", "x"), stamp}} {
		if got, ok := From(mds...); !ok || !got.Equal(at) {
			t.Errorf("From(%v) = %v %v", mds, got, ok)
		}
	}
	if _, ok := From(metadata.Pairs(Header, "yesterday"), nil); ok {
		t.Error("a value that is not a time was taken for one")
	}
	if _, ok := From(); ok {
		t.Error("no metadata, yet a time")
	}
}
