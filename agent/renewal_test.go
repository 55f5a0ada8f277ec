package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	linev1 "github.com/line-agent/line-agent/proto/line/v1"
	"github.com/line-agent/line-agent/relay"
)

// The renewal rules (docs/security.md, "The agent's credential: renewal
// and refusal"): 80% of the token's life on the wall clock, a sleep caught on
// wake, one renewal however many callers hear Unauthenticated, at most one
// every 5 s, and a refused credential kept and declared only after the
// grace. The first tests run on the fake clock of a testing/synctest bubble
// against a scripted Refresh; the others against real line-relays over TLS on
// 127.0.0.1, one of them restarted on a lost database.

// scriptedRefresh is the relay's Refresh as the token source sees it: tok1,
// tok2... valid for ttl on its clock, unless fail answers the call; with a
// gate, every call waits for it (or for its context).
type scriptedRefresh struct {
	linev1.LineRelayClient
	now   func() time.Time
	ttl   time.Duration
	gate  chan struct{}
	fail  func(n int32) error
	calls atomic.Int32
}

func (r *scriptedRefresh) Refresh(ctx context.Context, in *linev1.RefreshRequest, _ ...grpc.CallOption) (*linev1.RefreshResponse, error) {
	n := r.calls.Add(1)
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if r.fail != nil {
		if err := r.fail(n); err != nil {
			return nil, err
		}
	}
	return &linev1.RefreshResponse{Credential: &linev1.Credential{
		AccessToken: fmt.Sprintf("tok%d", n), ExpiresAt: timestamppb.New(r.now().Add(r.ttl)),
	}}, nil
}

// sourceFor is a token source holding tok0, issued now for ttl on clock.
func sourceFor(t *testing.T, rc linev1.LineRelayClient, clock func() time.Time, ttl time.Duration) *tokenSource {
	now := clock().Round(0)
	return &tokenSource{dir: t.TempDir(), client: rc, now: clock, creds: &Credentials{
		AgentID: "agt", AgentSecret: "s", AccessToken: "tok0", IssuedAt: now, ExpiresAt: now.Add(ttl),
	}}
}

// With a 100 s life, the token is renewed at 80 s, not at 79 s: by the loop
// (which wakes on its bounded tick right at 80 s) and by a use.
func TestRenewalAtEightyPercentOfAHundredSeconds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := &scriptedRefresh{now: time.Now, ttl: 100 * time.Second}
		looped := sourceFor(t, rc, time.Now, 100*time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go looped.keepFresh(ctx, func(err error) { t.Error(err) })
		used := &scriptedRefresh{now: time.Now, ttl: 100 * time.Second}
		ts := sourceFor(t, used, time.Now, 100*time.Second)

		advance(79 * time.Second)
		if tok, err := ts.token(t.Context(), false); rc.calls.Load() != 0 || used.calls.Load() != 0 || tok != "tok0" || err != nil {
			t.Fatalf("at 79 s: loop renewed %d times, use renewed %d times (%q %v); want none", rc.calls.Load(), used.calls.Load(), tok, err)
		}
		advance(time.Second)
		if n := rc.calls.Load(); n != 1 {
			t.Fatalf("at 80 s the loop renewed %d times, want 1", n)
		}
		if tok, err := ts.token(t.Context(), false); used.calls.Load() != 1 || tok != "tok1" || err != nil {
			t.Fatalf("a use at 80 s: %d renewals, %q %v; want the renewed token", used.calls.Load(), tok, err)
		}
	})
}

// A Mac that sleeps: the wall clock jumps past ExpiresAt while no timer
// fires (the monotonic clock stood still). The next use renews before it
// presents anything, and the loop renews at its next tick, within 30 s of
// the wake, where a timer set for 80% of the life would wait on.
func TestRenewalAfterTheMacSlept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var slept atomic.Int64 // what the wall clock is ahead of the bubble's
		wall := func() time.Time { return time.Now().Add(time.Duration(slept.Load())) }
		start := time.Now()

		used := &scriptedRefresh{now: wall, ttl: 100 * time.Second}
		ts := sourceFor(t, used, wall, 100*time.Second)
		looping := &scriptedRefresh{now: wall, ttl: 100 * time.Second}
		looped := sourceFor(t, looping, wall, 100*time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go looped.keepFresh(ctx, func(err error) { t.Error(err) })

		advance(10 * time.Second)
		slept.Store(int64(2 * time.Hour)) // the sleep, and the wake
		if since := time.Since(start); since >= 80*time.Second {
			t.Fatalf("the monotonic clock says %v passed; the test needs it short of 80 s", since)
		}
		tok, err := ts.token(t.Context(), false)
		if err != nil || tok != "tok1" || used.calls.Load() != 1 {
			t.Fatalf("first use after the wake: %q %v after %d renewals; want a renewed token, never the expired tok0", tok, err, used.calls.Load())
		}

		advance(19 * time.Second) // 29 s on the bubble's clock: the loop's first tick is at 30 s
		if n := looping.calls.Load(); n != 0 {
			t.Fatalf("the loop renewed %d times before its tick", n)
		}
		advance(time.Second)
		if n := looping.calls.Load(); n != 1 {
			t.Fatalf("the loop renewed %d times at its first tick after the wake, want 1", n)
		}
		// The new token's 80% is counted from the wake, on the wall clock.
		if got, want := looped.renewAt(), wall().Round(0).Add(80*time.Second); !got.Equal(want) {
			t.Fatalf("next renewal at %v, want %v", got, want)
		}
	})
}

// Outside a synctest bubble time.Now carries a monotonic reading, which
// stops while the Mac sleeps: neither the clock renewal compares with nor a
// renewed IssuedAt may carry one, or a comparison of the two would use it.
func TestRenewalTimesCarryNoMonotonicReading(t *testing.T) {
	rc := &scriptedRefresh{now: time.Now, ttl: time.Hour}
	ts := sourceFor(t, rc, time.Now, time.Hour)
	ts.now = nil // the real clock
	if !strings.Contains(time.Now().String(), "m=") {
		t.Fatal("time.Now carries no monotonic reading here: the test proves nothing")
	}
	if _, err := ts.token(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	for what, at := range map[string]time.Time{"the clock": ts.wall(), "IssuedAt": ts.creds.IssuedAt} {
		if s := at.String(); strings.Contains(s, "m=") {
			t.Errorf("%s %s carries a monotonic reading", what, s)
		}
	}
}

// The session, after a sleep, dials with a renewed token: the relay never
// sees the expired one.
func TestSessionAfterASleepPresentsARenewedToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var slept atomic.Int64
		wall := func() time.Time { return time.Now().Add(time.Duration(slept.Load())) }
		r := newFakeRelay(t, nil)
		s := startSession(t, r, func(o *SessionOptions) { o.Tokens.now = wall })
		if !s.Connected() || r.stream(1).auth != "Bearer tok0" {
			t.Fatalf("connected %v; want the first stream on tok0", s.Connected())
		}
		slept.Store(int64(2 * time.Hour))
		r.mu.Lock()
		r.token = "tok1" // tok0 has expired: the relay takes only what the next Refresh hands out
		r.mu.Unlock()
		r.down() // the network went with the sleep
		r.up()
		advance(500 * time.Millisecond)
		r.mu.Lock()
		rejected, refreshes := r.rejected, r.refreshes
		r.mu.Unlock()
		if rejected != 0 || refreshes != 1 || !s.Connected() || r.stream(2).auth != "Bearer tok1" {
			t.Fatalf("rejected %d, renewed %d, connected %v; want the second stream on tok1 and no refusal", rejected, refreshes, s.Connected())
		}
	})
}

// A Welcome ends a refusal remembered from a renewal: the relay took the
// agent's token, so a later outage is not counted as the same refusal.
func TestWelcomeEndsARefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newFakeRelay(t, nil)
		refusing := &scriptedRefresh{now: time.Now, ttl: time.Hour, fail: func(int32) error {
			return status.Error(codes.Unauthenticated, "the agent id or secret is not valid")
		}}
		s := startSession(t, r, func(o *SessionOptions) { o.Tokens.client = refusing })
		if _, err := s.o.Tokens.token(t.Context(), true); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("renewal: %v", err)
		}
		if msg, _ := s.o.Tokens.refusal(); msg == "" {
			t.Fatal("a refused renewal left no refusal")
		}
		r.down()
		r.up()
		advance(500 * time.Millisecond) // reconnects on tok0, which the relay takes
		if msg, _ := s.o.Tokens.refusal(); !s.Connected() || r.count() != 2 || msg != "" {
			t.Fatalf("connected %v after %d streams, refusal %q; want a second stream and no refusal", s.Connected(), r.count(), msg)
		}
	})
}

// Twenty callers hearing Unauthenticated at once cause one renewal and all
// get its token; within 5 s of it a forced call reuses it; at 5 s the relay
// is asked again. A caller that gives up does not fail those waiting with it.
func TestConcurrentUnauthenticatedShareOneRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := &scriptedRefresh{now: time.Now, ttl: time.Hour, gate: make(chan struct{})}
		ts := sourceFor(t, rc, time.Now, time.Hour)

		first, giveUp := context.WithCancel(t.Context())
		firstDone := make(chan error, 1)
		go func() { _, err := ts.token(first, true); firstDone <- err }()
		synctest.Wait() // the first caller's renewal waits at the relay
		toks := make([]string, 20)
		errs := make([]error, 20)
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() { toks[i], errs[i] = ts.token(t.Context(), true) })
		}
		synctest.Wait()
		if n := rc.calls.Load(); n != 1 {
			t.Fatalf("%d renewals under way for 21 callers, want 1", n)
		}
		giveUp()
		if err := <-firstDone; !errors.Is(err, context.Canceled) {
			t.Fatalf("the caller who gave up got %v", err)
		}
		synctest.Wait()
		if n := rc.calls.Load(); n != 2 {
			t.Fatalf("after the first caller left: %d renewals, want one more for those still waiting", n)
		}
		close(rc.gate)
		wg.Wait()
		for i := range 20 {
			if errs[i] != nil || toks[i] != "tok2" {
				t.Fatalf("caller %d: %q %v, want tok2", i, toks[i], errs[i])
			}
		}

		advance(4*time.Second + 999*time.Millisecond)
		if tok, err := ts.token(t.Context(), true); tok != "tok2" || err != nil || rc.calls.Load() != 2 {
			t.Fatalf("forced within 5 s: %q %v, %d renewals; want tok2 reused", tok, err, rc.calls.Load())
		}
		advance(time.Millisecond)
		if tok, err := ts.token(t.Context(), true); tok != "tok3" || err != nil || rc.calls.Load() != 3 {
			t.Fatalf("forced 5 s after the last renewal: %q %v, %d renewals; want tok3", tok, err, rc.calls.Load())
		}
	})
}

// A renewal only due (not forced) that fails hands out the current token
// while it has not expired; once it has, the error.
func TestFailedDueRenewalKeepsAValidToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rc := &scriptedRefresh{now: time.Now, ttl: 100 * time.Second, fail: func(int32) error { return status.Error(codes.Unavailable, "relay away") }}
		ts := sourceFor(t, rc, time.Now, 100*time.Second)
		advance(90 * time.Second)
		if tok, err := ts.token(t.Context(), false); tok != "tok0" || err != nil || rc.calls.Load() != 1 {
			t.Fatalf("due, renewal failed, token valid: %q %v (%d renewals); want tok0", tok, err, rc.calls.Load())
		}
		if _, err := ts.token(t.Context(), true); status.Code(err) != codes.Unavailable {
			t.Fatalf("forced, renewal failed: %v; want the renewal's error (Unavailable)", err)
		}
		advance(10 * time.Second)
		if tok, err := ts.token(t.Context(), false); tok != "" || status.Code(err) != codes.Unavailable {
			t.Fatalf("expired, renewal failed: %q %v; want no token and the error", tok, err)
		}
	})
}

// The relay refusing the agent secret: within the grace the credential is
// kept and health says it is being retried; at the grace (10 min by
// default, on the injected clock) it is declared refused, with the commands
// that enroll again, logged once; an accepted renewal clears it all. The
// credential file is never written while refused.
func TestRefusedCredentialDeclaredAfterTheGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var refuse atomic.Bool
		refuse.Store(true)
		rc := &scriptedRefresh{now: time.Now, ttl: time.Hour, fail: func(int32) error {
			if refuse.Load() {
				return status.Error(codes.Unauthenticated, "the agent id or secret is not valid")
			}
			return nil
		}}
		var logs syncBuffer
		ts := sourceFor(t, rc, time.Now, time.Hour)
		ts.dir = filepath.Join(t.TempDir(), "Application Support", "line-agent")
		ts.relay = "relay.example.com:443"
		ts.creds.CAFile = filepath.Join(ts.dir, "relay-ca.pem")
		ts.log = slog.New(slog.NewTextHandler(&logs, nil))
		if err := ts.creds.Save(ts.dir); err != nil {
			t.Fatal(err)
		}
		saved := readCredentials(t, ts.dir)
		start := time.Now().UTC()

		if _, err := ts.token(t.Context(), true); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("refused renewal: %v", err)
		}
		if msg, declared := ts.refusal(); declared || !strings.Contains(msg, "since "+start.Format(time.RFC3339)) || !strings.Contains(msg, "retrying") {
			t.Fatalf("just refused: %q declared=%v; want since when, retrying, not declared", msg, declared)
		}
		for range 119 { // 9 min 55 s of refusals, one every 5 s
			advance(5 * time.Second)
			ts.token(t.Context(), true)
		}
		if _, declared := ts.refusal(); declared || rc.calls.Load() != 120 {
			t.Fatalf("at 9 min 55 s: declared=%v after %d renewals; want not yet, 120 renewals", declared, rc.calls.Load())
		}
		advance(5 * time.Second)
		msg, declared := ts.refusal()
		cmd := "line-agent enroll --relay relay.example.com:443 --ca '" + ts.creds.CAFile + "' --token-file TOKEN_FILE --data '" + ts.dir + "'"
		if !declared || !strings.Contains(msg, "refused this agent's credential (agent agt) since "+start.Format(time.RFC3339)) ||
			!strings.Contains(msg, cmd) || !strings.Contains(msg, "line-relay token create") {
			t.Fatalf("at 10 min: declared=%v %q; want the refusal, since when and the command\n%s", declared, msg, cmd)
		}
		if strings.Contains(logs.String(), "longer than the grace") {
			t.Fatal("declared in the log before a renewal was refused past the grace")
		}
		ts.token(t.Context(), true)
		advance(5 * time.Second)
		ts.token(t.Context(), true)
		if n := strings.Count(logs.String(), "longer than the grace"); n != 1 {
			t.Fatalf("the declaration was logged %d times, want once:\n%s", n, logs.String())
		}
		if got := readCredentials(t, ts.dir); !bytes.Equal(got, saved) {
			t.Fatal("credentials.json changed while the relay refused it")
		}

		refuse.Store(false)
		advance(5 * time.Second)
		if tok, err := ts.token(t.Context(), true); err != nil || tok == "tok0" {
			t.Fatalf("accepted again: %q %v", tok, err)
		}
		if msg, declared := ts.refusal(); msg != "" || declared {
			t.Fatalf("after an accepted renewal: %q %v; want nothing", msg, declared)
		}
		if got, _ := LoadCredentials(ts.dir); got.AgentSecret != "s" || got.AccessToken == "tok0" {
			t.Fatalf("saved after acceptance: %+v", got)
		}
		noSecrets(t, logs.String(), "tok0", "tok1", fmt.Sprintf("tok%d", rc.calls.Load()))
	})
}

func readCredentials(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, credentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noSecrets fails when any of secrets appears in logs.
func noSecrets(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			t.Fatal("an empty secret to look for")
		}
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%.6s...) is in the logs", s)
		}
	}
}

// startLoggedRelay starts a line-relay on dir and addr whose logs go to w.
func startLoggedRelay(t *testing.T, dir, addr string, w io.Writer) *testRelay {
	t.Helper()
	srv, err := relay.New(relay.Options{
		DataDir: dir, GRPCAddr: addr, HTTPAddr: "127.0.0.1:0",
		HeartbeatInterval: 200 * time.Millisecond, HealthCheckInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(w, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &testRelay{Server: srv, dir: dir, t: t}
}

// lostDatabaseRelay is the relay of dir restarted on addr without its
// database: the same certificate authority and server certificate (agents
// still trust it), no agents, no tokens. It refuses every access token and
// every agent secret with Unauthenticated, as a relay whose relay.db was lost
// or not yet restored does.
func lostDatabaseRelay(t *testing.T, dir, addr string, w io.Writer) *testRelay {
	t.Helper()
	lost := t.TempDir()
	for _, f := range []string{"ca.pem", "ca-key.pem", "server.pem", "server-key.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(lost, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return startLoggedRelay(t, lost, addr, w)
}

// enrollWith enrolls dataDir with r and returns its credentials.
func enrollWith(t *testing.T, r *testRelay, dataDir string) *Credentials {
	t.Helper()
	tok, err := r.CreateProjectToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c, err := Enroll(context.Background(), EnrollOptions{DialOptions: DialOptions{Addr: r.GRPCAddr(), CAFile: r.CAFile()}, Token: tok, DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// countingRelayClient counts the Refresh calls that reach the relay.
type countingRelayClient struct {
	linev1.LineRelayClient
	refreshes atomic.Int32
}

func (c *countingRelayClient) Refresh(ctx context.Context, in *linev1.RefreshRequest, opts ...grpc.CallOption) (*linev1.RefreshResponse, error) {
	c.refreshes.Add(1)
	return c.LineRelayClient.Refresh(ctx, in, opts...)
}

// stepClock is a wall clock the test moves by hand; its zero is the real
// time when it was made.
type stepClock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// A real relay that lost its database refuses the agent for 30 s of
// injected time: 20 callers at once ask it once, and then it is asked once
// every 5 s however often callers hear Unauthenticated (three callers every
// second). The credential file does not change. When the relay is back on
// its database, the next renewal is accepted for the same agent and secret.
func TestRefusingRelayIsAskedAtMostEveryFiveSeconds(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	dir := t.TempDir()
	r := startLoggedRelay(t, dir, "127.0.0.1:0", &logs)
	addr := r.GRPCAddr()
	dataDir := t.TempDir()
	enrolled := enrollWith(t, r, dataDir)
	saved := readCredentials(t, dataDir)
	r.Close()
	lost := lostDatabaseRelay(t, dir, addr, &logs)

	cc, err := Dial(DialOptions{Addr: addr, CAFile: enrolled.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rc := &countingRelayClient{LineRelayClient: linev1.NewLineRelayClient(cc)}
	clock := &stepClock{t: time.Now()}
	creds, err := LoadCredentials(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenSource{dir: dataDir, client: rc, creds: creds, now: clock.now, relay: addr, log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := t.Context()

	forced := func(n int) {
		t.Helper()
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, errs[i] = ts.token(ctx, true) })
		}
		wg.Wait()
		for _, err := range errs {
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("a renewal against the relay without its database: %v, want Unauthenticated", err)
			}
		}
	}
	forced(20)
	if n := rc.refreshes.Load(); n != 1 {
		t.Fatalf("20 callers at once asked the relay %d times, want 1", n)
	}
	for s := 1; s <= 30; s++ {
		clock.add(time.Second)
		forced(3)
		if got, want := rc.refreshes.Load(), int32(1+s/5); got != want {
			t.Fatalf("after %d s: the relay was asked %d times, want %d (one every 5 s)", s, got, want)
		}
	}
	if msg, declared := ts.refusal(); declared || !strings.Contains(msg, "retrying") {
		t.Fatalf("30 s into the refusal: %q declared=%v; want retrying, not declared", msg, declared)
	}
	if got := readCredentials(t, dataDir); !bytes.Equal(got, saved) {
		t.Fatal("credentials.json changed while the relay refused the agent")
	}

	lost.Close()
	r = startLoggedRelay(t, dir, addr, &logs)
	var tok string
	for try := 0; ; try++ {
		clock.add(5 * time.Second)
		cc.ResetConnectBackoff()
		if tok, err = ts.token(ctx, true); err == nil {
			break
		}
		if c := status.Code(err); c == codes.Unauthenticated || try == 50 {
			t.Fatalf("renewal against the restored relay, try %d: %v", try, err)
		}
		time.Sleep(100 * time.Millisecond) // the connection to the restarted relay comes up on real time
	}
	got, err := LoadCredentials(dataDir)
	if err != nil || got.AccessToken != tok || got.AgentID != enrolled.AgentID || got.AgentSecret != enrolled.AgentSecret {
		t.Fatalf("after the relay came back: %v; want the renewed token saved for the same agent and secret", err)
	}
	if msg, _ := ts.refusal(); msg != "" {
		t.Fatalf("refusal still reported after an accepted renewal: %q", msg)
	}
	if !strings.Contains(logs.String(), "refresh refused") {
		t.Fatal("the relay's log shows no refusal: the capture is not working")
	}
	noSecrets(t, logs.String(), enrolled.AgentSecret, enrolled.AccessToken, tok)
}

// agentFor returns an agent on dataDir (already enrolled) whose logs go to w.
func agentFor(t *testing.T, dataDir string, grace time.Duration, w io.Writer) *Agent {
	t.Helper()
	cfg := Config{DataDir: dataDir, Lines: []string{testLine}, ShutdownGrace: 5 * time.Second, AuthGrace: grace}
	a, err := New(Options{Config: cfg, Backend: Backend{Name: "test", Driver: &countingDriver{}},
		Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), Backoff: &Backoff{Base: 100 * time.Millisecond, Cap: 500 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// relayHealth reads the relay component from the agent's status socket, as
// `line-agent status` does.
func relayHealth(t *testing.T, dataDir string) func() *linev1.HealthComponent {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dataDir, "status.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := linev1.NewAgentStatusClient(conn)
	return func() *linev1.HealthComponent {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		rep, err := client.Status(ctx, &linev1.StatusRequest{})
		if err != nil {
			return nil
		}
		for _, c := range rep.GetComponents() {
			if c.GetName() == "relay" {
				return c
			}
		}
		return nil
	}
}

// runAgent runs a until the test ends.
func runAgent(t *testing.T, a *Agent) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// A passing fault: the relay restarts without its database for a few
// seconds (every token and the secret refused) and then comes back on it.
// Meanwhile health says the credential is refused and retried, and
// credentials.json stays byte for byte what it was; afterwards the agent is
// connected again as the same agent. No log line of the agent or either
// relay holds the secret or a token.
func TestPassingAuthFaultKeepsTheCredential(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	dir := t.TempDir()
	r := startLoggedRelay(t, dir, "127.0.0.1:0", &logs)
	addr := r.GRPCAddr()
	dataDir := t.TempDir()
	enrolled := enrollWith(t, r, dataDir)
	runAgent(t, agentFor(t, dataDir, 0, &logs))
	waitConnected(t, r, true, 10*time.Second)
	saved := readCredentials(t, dataDir)
	health := relayHealth(t, dataDir)

	r.Close()
	lost := lostDatabaseRelay(t, dir, addr, &logs)
	var hc *linev1.HealthComponent
	if !eventually(15*time.Second, func() bool {
		hc = health()
		return hc != nil && strings.Contains(hc.GetDetail(), "has refused this agent's credential since")
	}) {
		t.Fatalf("health during the fault: %v; want the refusal", hc)
	}
	if hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(hc.GetDetail(), "retrying") || strings.Contains(hc.GetDetail(), "re-enroll") {
		t.Fatalf("health within the grace: %v; want DOWN, retrying, no re-enrollment yet", hc)
	}
	// A second refused renewal, at least 5 s after the first.
	if !eventually(20*time.Second, func() bool { return strings.Count(logs.String(), "refresh refused") >= 2 }) {
		t.Fatalf("the relay without its database refused %d renewals, want 2", strings.Count(logs.String(), "refresh refused"))
	}
	if got := readCredentials(t, dataDir); !bytes.Equal(got, saved) {
		t.Fatal("credentials.json changed during a passing fault")
	}

	lost.Close()
	r = startLoggedRelay(t, dir, addr, &logs)
	waitConnected(t, r, true, 20*time.Second)
	if !eventually(10*time.Second, func() bool {
		hc = health()
		return hc.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_OK
	}) {
		t.Fatalf("health after the fault: %v", hc)
	}
	after, err := LoadCredentials(dataDir)
	if err != nil || after.AgentID != enrolled.AgentID || after.AgentSecret != enrolled.AgentSecret {
		t.Fatalf("credentials after the fault: %v; want the same agent and secret", err)
	}
	noSecrets(t, logs.String(), enrolled.AgentSecret, enrolled.AccessToken, after.AccessToken)
}

// A fault longer than the grace (1 s here): health declares the credential
// refused, since when, and gives the command that enrolls again; the
// declaration is logged; credentials.json is untouched. The agent keeps
// trying, so a relay restored after the declaration takes it back.
func TestLongAuthFaultDeclaresTheCredentialRefused(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	dir := t.TempDir()
	r := startLoggedRelay(t, dir, "127.0.0.1:0", &logs)
	addr := r.GRPCAddr()
	dataDir := t.TempDir()
	enrolled := enrollWith(t, r, dataDir)
	runAgent(t, agentFor(t, dataDir, time.Second, &logs))
	waitConnected(t, r, true, 10*time.Second)
	saved := readCredentials(t, dataDir)
	health := relayHealth(t, dataDir)

	r.Close()
	lost := lostDatabaseRelay(t, dir, addr, &logs)
	cmd := "line-agent enroll --relay " + addr + " --ca " + enrolled.CAFile + " --token-file TOKEN_FILE --data " + dataDir
	var hc *linev1.HealthComponent
	if !eventually(15*time.Second, func() bool {
		hc = health()
		return hc != nil && strings.Contains(hc.GetDetail(), "longer than the 1s grace")
	}) {
		t.Fatalf("health after the grace: %v; want the credential declared refused", hc)
	}
	if d := hc.GetDetail(); hc.GetStatus() != linev1.HealthStatus_HEALTH_STATUS_DOWN || !strings.Contains(d, "agent "+enrolled.AgentID) ||
		!strings.Contains(d, cmd) || !strings.Contains(d, "credentials.json is kept") {
		t.Fatalf("health after the grace: %v; want DOWN, the agent, the command %q, the file kept", hc, cmd)
	}
	if !eventually(15*time.Second, func() bool { return strings.Contains(logs.String(), "longer than the grace") }) {
		t.Fatal("the declaration was not logged")
	}
	if got := readCredentials(t, dataDir); !bytes.Equal(got, saved) {
		t.Fatal("credentials.json changed after the declaration")
	}

	lost.Close()
	r = startLoggedRelay(t, dir, addr, &logs)
	waitConnected(t, r, true, 20*time.Second)
	if !eventually(10*time.Second, func() bool {
		hc = health()
		return hc.GetStatus() == linev1.HealthStatus_HEALTH_STATUS_OK && !strings.Contains(hc.GetDetail(), "refused")
	}) {
		t.Fatalf("health once the relay took the credential back: %v", hc)
	}
	after, _ := LoadCredentials(dataDir)
	noSecrets(t, logs.String(), enrolled.AgentSecret, enrolled.AccessToken, after.AccessToken)
}

// Enrolling again keeps the credential it replaces, byte for byte, beside
// the new one; a failed enrollment changes nothing.
func TestEnrollAgainKeepsTheReplacedCredentials(t *testing.T) {
	t.Parallel()
	r := startLoggedRelay(t, t.TempDir(), "127.0.0.1:0", io.Discard)
	dataDir := t.TempDir()
	first := enrollWith(t, r, dataDir)
	old := readCredentials(t, dataDir)

	_, err := Enroll(context.Background(), EnrollOptions{DialOptions: DialOptions{Addr: r.GRPCAddr(), CAFile: r.CAFile()}, Token: "lrp_not-a-token", DataDir: dataDir})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("enroll with a bad token: %v", err)
	}
	if got := readCredentials(t, dataDir); !bytes.Equal(got, old) {
		t.Fatal("a failed enrollment changed credentials.json")
	}
	second := enrollWith(t, r, dataDir)
	if second.AgentID == first.AgentID {
		t.Fatal("enrolled again as the same agent")
	}
	kept, err := filepath.Glob(filepath.Join(dataDir, credentialsFile+".replaced-*"))
	if err != nil || len(kept) != 1 {
		t.Fatalf("replaced credentials kept: %v %v, want one file", kept, err)
	}
	if b, err := os.ReadFile(kept[0]); err != nil || !bytes.Equal(b, old) {
		t.Fatalf("the kept file is not the replaced credentials: %v", err)
	}
	if info, err := os.Stat(kept[0]); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("kept file mode: %v %v, want 0600", info, err)
	}
	if c, _ := LoadCredentials(dataDir); c.AgentID != second.AgentID {
		t.Fatalf("credentials.json holds %s, want the new agent %s", c.AgentID, second.AgentID)
	}
}
