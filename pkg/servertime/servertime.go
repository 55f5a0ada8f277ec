// Package servertime tells an agent the relay's clock. The relay puts its
// time in one response header of every Refresh answer, refusals included,
// so `line-agent doctor` can measure this Mac's clock skew with a call that
// needs no credentials (an empty Refresh, refused at once) and changes
// nothing. A skewed clock shortens or stretches command deadlines, renews
// tokens at the wrong moment and, past the certificates' validity, breaks
// TLS.
package servertime

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// Header is the response header holding the relay's time, RFC 3339 with
// nanoseconds, UTC.
const Header = "line-relay-time"

// Set puts the relay's time on the answer of the call ctx is, before its
// handler decides: an answer it refuses carries it too.
func Set(ctx context.Context) {
	_ = grpc.SetHeader(ctx, metadata.Pairs(Header, time.Now().UTC().Format(time.RFC3339Nano)))
}

// From finds the relay's time in an answer's header or trailer (an answer
// refused before any message is sent carries its headers in the
// trailer); false when the relay sent none, or one that is not a time.
func From(mds ...metadata.MD) (time.Time, bool) {
	for _, md := range mds {
		for _, v := range md.Get(Header) {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return t, true
			}
		}
	}
	return time.Time{}, false
}
