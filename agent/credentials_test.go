package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// refreshCounter is the relay's Refresh as far as the token source sees it.
type refreshCounter struct {
	linev1.LineRelayClient
	calls atomic.Int32
	ttl   time.Duration
}

func (r *refreshCounter) Refresh(ctx context.Context, in *linev1.RefreshRequest, _ ...grpc.CallOption) (*linev1.RefreshResponse, error) {
	n := r.calls.Add(1)
	return &linev1.RefreshResponse{Credential: &linev1.Credential{
		AccessToken: "tok" + string(rune('0'+n)), ExpiresAt: timestamppb.New(time.Now().Add(r.ttl)),
	}}, nil
}

func TestTokenRenewedAtEightyPercentOfItsLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		now := time.Now()
		rc := &refreshCounter{ttl: time.Hour}
		ts := &tokenSource{dir: dir, client: rc, creds: &Credentials{
			AgentID: "agt", AgentSecret: "s", AccessToken: "tok0", IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		}}
		ctx, cancel := context.WithCancel(t.Context())
		go ts.keepFresh(ctx, func(err error) { t.Error(err) })

		advance(48*time.Minute - time.Millisecond)
		if n := rc.calls.Load(); n != 0 {
			t.Fatalf("renewed %d times before 80%% of the TTL", n)
		}
		advance(time.Millisecond) // 48 min: 80% of the hour
		if n := rc.calls.Load(); n != 1 {
			t.Fatalf("renewals after 80%% of the TTL: %d, want 1", n)
		}
		tok, err := ts.token(ctx, false)
		if err != nil || tok != "tok1" {
			t.Fatalf("token after renewal %q %v", tok, err)
		}
		// The renewed credential is saved 0600 for the next start.
		info, err := os.Stat(filepath.Join(dir, credentialsFile))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("saved credentials: %v %v", info, err)
		}
		c, _ := LoadCredentials(dir)
		if c.AccessToken != "tok1" || c.AgentSecret != "s" {
			t.Fatalf("saved %+v", c)
		}
		cancel()
	})
}

// failingRefresh fails the first Refresh, then hands out tok1, tok2...
type failingRefresh struct {
	linev1.LineRelayClient
	calls atomic.Int32
}

func (r *failingRefresh) Refresh(ctx context.Context, in *linev1.RefreshRequest, _ ...grpc.CallOption) (*linev1.RefreshResponse, error) {
	n := r.calls.Add(1)
	if n == 1 {
		return nil, status.Error(codes.Unavailable, "relay away")
	}
	return &linev1.RefreshResponse{Credential: &linev1.Credential{
		AccessToken: fmt.Sprintf("tok%d", n-1), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
	}}, nil
}

// A failed renewal is retried a minute later, and the next renewal is at
// 80% of the new token's life.
func TestFailedTokenRenewalIsRetriedAfterAMinute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		now := time.Now()
		rc := &failingRefresh{}
		ts := &tokenSource{dir: t.TempDir(), client: rc, creds: &Credentials{
			AgentID: "agt", AgentSecret: "s", AccessToken: "tok0", IssuedAt: now, ExpiresAt: now.Add(time.Hour),
		}}
		var failures atomic.Int32
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go ts.keepFresh(ctx, func(error) { failures.Add(1) })

		advance(48 * time.Minute)
		if rc.calls.Load() != 1 || failures.Load() != 1 {
			t.Fatalf("at 80%%: %d renewals, %d failures logged; want the one that failed", rc.calls.Load(), failures.Load())
		}
		advance(time.Minute - time.Millisecond)
		if rc.calls.Load() != 1 {
			t.Fatal("retried before a minute had passed")
		}
		advance(time.Millisecond)
		if tok, err := ts.token(ctx, false); rc.calls.Load() != 2 || err != nil || tok != "tok1" {
			t.Fatalf("a minute after the failure: %d renewals, token %q %v", rc.calls.Load(), tok, err)
		}
		// Renewed at 49 min for an hour: the next renewal is at 49 + 48 min.
		advance(48*time.Minute - time.Millisecond)
		if rc.calls.Load() != 2 {
			t.Fatal("renewed before 80% of the new token's life")
		}
		advance(time.Millisecond)
		if rc.calls.Load() != 3 || failures.Load() != 1 {
			t.Fatalf("%d renewals, %d failures; want the third renewal at 97 min", rc.calls.Load(), failures.Load())
		}
	})
}

func TestPlaintextOnlyToLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "10.0.0.1:1": false, "relay.example.com:443": false} {
		_, err := Dial(DialOptions{Addr: addr, Plaintext: true})
		if (err == nil) != ok {
			t.Errorf("plaintext to %s: err %v, want allowed=%v", addr, err, ok)
		}
	}
}
