package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
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

		time.Sleep(47 * time.Minute)
		synctest.Wait()
		if n := rc.calls.Load(); n != 0 {
			t.Fatalf("renewed %d times before 80%% of the TTL", n)
		}
		time.Sleep(2 * time.Minute) // 49 min: past 48 min (80%)
		synctest.Wait()
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
