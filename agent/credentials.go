package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/line-agent/line-agent/pkg/capool"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Credentials is what enrollment leaves in the data directory
// (credentials.json, mode 0600, written atomically). The project token is not
// among them: it is used once and forgotten.
type Credentials struct {
	AgentID     string    `json:"agent_id"`
	AgentSecret string    `json:"agent_secret"`
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
	IssuedAt    time.Time `json:"issued_at"`
	Relay       string    `json:"relay"`
	// Lines are the lines this Mac was enrolled for: `run` serves them when
	// LINE_AGENT_LINES names none, so the LaunchAgent that `install` writes
	// (which passes no lines) serves what enrollment bound.
	Lines []string `json:"lines,omitempty"`
	// CAFile is the relay CA copied into the data directory, empty for the
	// system roots.
	CAFile    string `json:"ca_file,omitempty"`
	Plaintext bool   `json:"plaintext,omitempty"`
}

// EnrolledLines fills cfg.Lines, when it names none, with the lines the
// data directory was enrolled for: a LaunchAgent runs `line-agent run`
// with no lines on its command line. Not enrolled, or enrolled before
// credentials kept lines, it leaves cfg as it is (the driver then says
// what is missing).
func EnrolledLines(cfg *Config) {
	if len(cfg.Lines) > 0 {
		return
	}
	if c, err := LoadCredentials(cfg.DataDir); err == nil {
		cfg.Lines = c.Lines
	}
}

// ErrNotEnrolled means the data directory holds no credentials yet.
var ErrNotEnrolled = errors.New("not enrolled: run `line-agent enroll` first")

const credentialsFile = "credentials.json"

// LoadCredentials reads credentials.json from dir.
func LoadCredentials(dir string) (*Credentials, error) {
	b, err := os.ReadFile(filepath.Join(dir, credentialsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("credentials: %s is damaged: %w", filepath.Join(dir, credentialsFile), err)
	}
	return &c, nil
}

// Save writes credentials.json atomically with mode 0600.
func (c *Credentials) Save(dir string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, credentialsFile), b, 0o600)
}

// writeFileAtomic writes through a temporary file and a rename, so a crash
// leaves the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// DialOptions says how to reach the relay.
type DialOptions struct {
	// Addr is host:port, or several separated by commas (relay replicas,
	// tried in order: relayTarget).
	Addr string
	// CAFile is a PEM CA bundle to trust; empty means the system roots.
	CAFile string
	// Plaintext disables TLS; refused unless Addr is a loopback address.
	Plaintext bool
	// Transport, when set, makes the TCP connections, so they can be
	// dropped when the relay goes silent (see Transport).
	Transport *Transport
}

// ErrPlaintextNotLoopback refuses plaintext to anything but loopback: tokens
// would cross a network in the clear.
var ErrPlaintextNotLoopback = errors.New("plaintext is allowed only to a loopback address")

// Dial creates the gRPC client connection to the relay. It does not connect:
// grpc.NewClient connects lazily, and the session owns reconnection.
func Dial(o DialOptions) (*grpc.ClientConn, error) {
	addrs, err := relayAddrs(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	var tc credentials.TransportCredentials
	if o.Plaintext {
		for _, a := range addrs {
			if !isLoopback(a) {
				return nil, fmt.Errorf("dial %s: %w", a, ErrPlaintextNotLoopback)
			}
		}
		tc = insecure.NewCredentials()
	} else {
		cfg, err := TLSConfig(o.CAFile)
		if err != nil {
			return nil, err
		}
		tc = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(tc),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}
	if o.Transport != nil {
		opts = append(opts, grpc.WithContextDialer(o.Transport.dial))
	}
	target, more := relayTarget(addrs)
	return grpc.NewClient(target, append(opts, more...)...)
}

// TLSConfig is the trust the agent dials the relay with: caFile's CAs,
// or the system roots when it is empty. line-agent doctor checks the
// relay with the same, so its verdict is the agent's.
func TLSConfig(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return cfg, nil
	}
	pool, err := capool.Load(caFile)
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// RelayTarget is where the agent dials and with which trust: the
// configuration's relay and CA where set, else what enrollment recorded
// (creds nil: not enrolled). Run dials it and line-agent doctor checks
// it, so both mean the same relay.
func RelayTarget(cfg Config, creds *Credentials) DialOptions {
	o := DialOptions{Addr: cfg.Relay, CAFile: cfg.CAFile, Plaintext: cfg.Plaintext}
	if creds != nil {
		if o.Addr == "" {
			o.Addr = creds.Relay
		}
		if o.CAFile == "" {
			o.CAFile = creds.CAFile
		}
		o.Plaintext = o.Plaintext || creds.Plaintext
	}
	return o
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// EnrollOptions are the inputs of a first enrollment.
type EnrollOptions struct {
	DialOptions
	// Token is the project token; it is sent once and never stored.
	Token    string
	DataDir  string
	Hostname string
	Version  string
	Lines    []string
}

// Enroll trades a project token for an agent identity and writes
// credentials.json; the CA file is copied into the data directory so the
// agent does not depend on where it came from.
func Enroll(ctx context.Context, o EnrollOptions) (*Credentials, error) {
	if o.Token == "" {
		return nil, errors.New("enroll: the project token is empty")
	}
	conn, err := Dial(o.DialOptions)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer conn.Close()
	resp, err := linev1.NewLineRelayClient(conn).Enroll(ctx, &linev1.EnrollRequest{
		ProjectToken: o.Token, Hostname: o.Hostname, Version: o.Version, Lines: o.Lines,
	})
	if err != nil {
		return nil, fmt.Errorf("enroll with %s: %w", o.Addr, err)
	}
	c := &Credentials{
		AgentID: resp.GetAgentId(), AgentSecret: resp.GetAgentSecret(),
		AccessToken: resp.GetCredential().GetAccessToken(), ExpiresAt: resp.GetCredential().GetExpiresAt().AsTime(),
		IssuedAt: time.Now().Round(0), Relay: o.Addr, Plaintext: o.Plaintext, Lines: o.Lines,
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("enroll: read CA: %w", err)
		}
		c.CAFile = filepath.Join(o.DataDir, "relay-ca.pem")
		if err := writeFileAtomic(c.CAFile, pem, 0o600); err != nil {
			return nil, fmt.Errorf("enroll: keep CA: %w", err)
		}
	}
	// The journal exists from enrollment on, so that an enrolled agent
	// starting without state.db knows it lost it (see Journal.Created).
	j, err := OpenJournal(o.DataDir, 0)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := j.Close(); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	// Only now, with the relay's answer in hand: a failed enrollment leaves
	// the data directory's credentials as they were.
	if err := setAsideCredentials(o.DataDir, time.Now()); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	if err := c.Save(o.DataDir); err != nil {
		return nil, fmt.Errorf("enroll: save credentials: %w", err)
	}
	return c, nil
}

// setAsideCredentials keeps an existing credentials.json under
// credentials.json.replaced-<UTC time> before enrollment writes a new one, so
// that enrolling again never destroys a credential an operator may want to
// look into (one the relay refused, say: docs/security.md). It links rather
// than renames: until the new file is written the old one stays in place, and
// a name already taken is never overwritten.
func setAsideCredentials(dir string, now time.Time) error {
	cur := filepath.Join(dir, credentialsFile)
	if _, err := os.Lstat(cur); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("look at the credentials in place: %w", err)
	}
	base := cur + ".replaced-" + now.UTC().Format("20060102T150405Z")
	for i := range 100 {
		name := base
		if i > 0 {
			name = fmt.Sprintf("%s-%d", base, i+1)
		}
		err := os.Link(cur, name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("keep the credentials in place: %w", err)
		}
	}
	return fmt.Errorf("keep the credentials in place: 100 names %s-N are taken", base)
}

// The renewal rules (docs/security.md, "The agent's credential: renewal
// and refusal").
const (
	// renewTick bounds every wait of the renewal loop. A timer runs on the
	// monotonic clock, which stops while a Mac sleeps: a 48-minute timer set
	// before a two-hour sleep fires 48 minutes after the wake, long after the
	// token expired. Waking at least this often and comparing wall times
	// catches a sleep within renewTick of the wake.
	renewTick = 30 * time.Second
	// renewThrottle is the least time between the starts of two renewals:
	// every stream, blob fetch and upload that hears Unauthenticated at once
	// shares one renewal, and one within this long of the last reuses its
	// answer instead of asking the relay again.
	renewThrottle = 5 * time.Second
	// renewRetry is how long the loop waits after a failed renewal (a relay
	// that is away would otherwise be asked at every tick).
	renewRetry = time.Minute
	// renewTimeout bounds one Refresh call: a half-open connection must not
	// hold every caller that shares the renewal.
	renewTimeout = 30 * time.Second
	// defaultAuthGrace is how long the relay may refuse the agent secret
	// before the credential is declared refused (Config.AuthGrace).
	defaultAuthGrace = 10 * time.Minute
)

// tokenSource hands out the current access token and renews it with the agent
// secret at 80% of its lifetime on the wall clock, or at once when the relay
// said Unauthenticated, at most once every renewThrottle however many callers
// ask. A refusal of the agent secret itself is remembered: past the grace,
// health says the credential is refused and how to re-enroll, while the
// agent keeps the credential and keeps trying (a relay restored from a
// backup takes it back). The credential is written only after an accepted
// renewal, atomically, and never logged.
type tokenSource struct {
	dir    string
	client linev1.LineRelayClient
	// now reads the wall clock; nil means time.Now. Tests move it to play a
	// Mac that slept: the wall clock jumps while no timer fires.
	now func() time.Time
	// grace is how long the relay may refuse the agent secret before the
	// credential is declared refused; zero means defaultAuthGrace.
	grace time.Duration
	// relay is the address the agent dials, for the re-enrollment advice;
	// empty means the one enrolled with.
	relay string
	// log hears the declaration (once per refusal) and a renewed token that
	// could not be saved; nil logs nothing.
	log *slog.Logger

	mu sync.Mutex
	// creds is the current credential set; guarded by mu.
	creds *Credentials
	// inflight is the renewal under way, nil when none; last is the last
	// one answered (abandoned ones are not). Guarded by mu.
	inflight *renewal
	last     *renewal
	// refusedSince is when the first renewal the relay refused (the agent
	// secret not accepted) started, counted since the last renewal it
	// accepted or the last Welcome; zero while there was none. declared is
	// set once the refusal outlasted the grace and was logged. Guarded by
	// mu.
	refusedSince time.Time
	declared     bool
}

// renewal is one Refresh call, shared by every caller that wants a renewal
// while it runs or within renewThrottle of its start.
type renewal struct {
	// started is the wall time it began.
	started time.Time
	// done is closed once token, err and abandoned are set.
	done  chan struct{}
	token string
	err   error
	// abandoned means the caller who ran it stopped waiting (its context
	// ended) before the relay answered: there is no answer to share.
	abandoned bool
}

// wall is the wall-clock time now, stripped of Go's monotonic reading. Two
// times that both carry one are compared by it, and it stops while the Mac
// sleeps: a token issued before a two-hour sleep would look as young after
// the wake as before it. Renewal compares wall times only: ExpiresAt and
// IssuedAt are wall times (the relay's clock and this one's), and so is now.
func (t *tokenSource) wall() time.Time {
	now := time.Now
	if t.now != nil {
		now = t.now
	}
	return now().Round(0)
}

// renewAtOf is when c is due for renewal: at 80% of its life.
func renewAtOf(c *Credentials) time.Time {
	return c.IssuedAt.Add(c.ExpiresAt.Sub(c.IssuedAt) * 8 / 10)
}

// renewAt is when the current token is due for renewal.
func (t *tokenSource) renewAt() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return renewAtOf(t.creds)
}

// token returns an access token to present now. It renews first when 80% of
// the current token's life has passed on the wall clock, or when force is set
// (the relay just said Unauthenticated to the token). When a renewal that was
// only due fails while the current token has not expired, the current one is
// handed out: it is still good.
func (t *tokenSource) token(ctx context.Context, force bool) (string, error) {
	tok, err := t.fresh(ctx, force)
	if err == nil || force || ctx.Err() != nil {
		return tok, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.creds; c.AccessToken != "" && t.wall().Before(c.ExpiresAt) {
		return c.AccessToken, nil
	}
	return "", err
}

// fresh is token without the fallback to a token still valid: the keeping
// loop must know when a renewal failed.
func (t *tokenSource) fresh(ctx context.Context, force bool) (string, error) {
	for {
		t.mu.Lock()
		now := t.wall()
		c := t.creds
		if !force && c.AccessToken != "" && now.Before(renewAtOf(c)) {
			t.mu.Unlock()
			return c.AccessToken, nil
		}
		if r := t.inflight; r != nil {
			t.mu.Unlock()
			select {
			case <-r.done:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if r.abandoned {
				continue // its caller left before the answer: ask again
			}
			return r.token, r.err
		}
		if l := t.last; l != nil && !now.Before(l.started) && now.Sub(l.started) < renewThrottle {
			t.mu.Unlock()
			return l.token, l.err
		}
		r := &renewal{started: now, done: make(chan struct{})}
		t.inflight = r
		t.mu.Unlock()
		t.renew(ctx, r)
		if r.abandoned {
			return "", ctx.Err()
		}
		return r.token, r.err
	}
}

// renew runs r: Refresh with the agent secret, and the renewed credential
// saved before anyone is handed it.
func (t *tokenSource) renew(ctx context.Context, r *renewal) {
	t.mu.Lock()
	c := t.creds // only a renewal replaces it, and this is the only one running
	t.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, renewTimeout)
	resp, err := t.client.Refresh(rctx, &linev1.RefreshRequest{AgentId: c.AgentID, AgentSecret: c.AgentSecret})
	cancel()
	var nc *Credentials
	var saveErr error
	switch {
	case err != nil:
		err = fmt.Errorf("refresh access token: %w", err)
	case resp.GetCredential().GetAccessToken() == "":
		err = errors.New("refresh access token: the relay's answer holds no token")
	default:
		cred := *c
		nc = &cred
		nc.AccessToken = resp.GetCredential().GetAccessToken()
		nc.ExpiresAt = resp.GetCredential().GetExpiresAt().AsTime()
		nc.IssuedAt = t.wall()
		// The relay issued it and the old one stays valid until it expires,
		// so an unsaved token is still used: only the next start would miss
		// it, and it renews with the secret then.
		saveErr = nc.Save(t.dir)
	}

	t.mu.Lock()
	t.inflight = nil
	if err != nil && ctx.Err() != nil {
		r.abandoned = true
		t.mu.Unlock()
		close(r.done)
		return
	}
	t.last = r
	var declare []any
	if err == nil {
		t.creds, r.token = nc, nc.AccessToken
		t.refusedSince, t.declared = time.Time{}, false
	} else {
		r.err = err
		if status.Code(err) == codes.Unauthenticated {
			if t.refusedSince.IsZero() {
				t.refusedSince = r.started
			}
			if !t.declared && t.wall().Sub(t.refusedSince) >= t.graceOrDefault() {
				t.declared = true
				declare = []any{"agent", c.AgentID, "since", t.refusedSince.UTC().Format(time.RFC3339), "grace", t.graceOrDefault()}
			}
		}
	}
	t.mu.Unlock()
	close(r.done)

	if t.log == nil {
		return
	}
	if saveErr != nil {
		t.log.Warn("the renewed access token could not be saved; it is used from memory, and the next start renews again", "err", saveErr)
	}
	if declare != nil {
		t.log.Error("the relay has refused this agent's credential for longer than the grace: re-enroll with a new project token (line-agent status says how); credentials.json is kept and the agent keeps trying", declare...)
	}
}

// accepted is the relay taking this agent's access token (a Welcome): it
// knows the credential, so a refusal remembered from before is over.
func (t *tokenSource) accepted() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refusedSince, t.declared = time.Time{}, false
}

func (t *tokenSource) graceOrDefault() time.Duration {
	if t.grace > 0 {
		return t.grace
	}
	return defaultAuthGrace
}

// refusal tells the relay health component that the relay refuses this
// agent's credential: "" while it does not; within the grace, since when and
// that the agent keeps trying (declared false); past it, plainly that the
// credential is refused and the commands that enroll the Mac again (declared
// true).
func (t *tokenSource) refusal() (msg string, declared bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refusedSince.IsZero() {
		return "", false
	}
	since, grace := t.refusedSince.UTC().Format(time.RFC3339), t.graceOrDefault()
	if t.wall().Sub(t.refusedSince) < grace {
		return fmt.Sprintf("the relay has refused this agent's credential since %s; retrying, with the credential kept; if that lasts %s it is declared refused", since, grace), false
	}
	c := t.creds
	relay := t.relay
	if relay == "" {
		relay = c.Relay
	}
	cmd := "line-agent enroll --relay " + shellWord(relay)
	if c.CAFile != "" {
		cmd += " --ca " + shellWord(c.CAFile)
	}
	if c.Plaintext {
		cmd += " --plaintext"
	}
	cmd += " --token-file TOKEN_FILE --data " + shellWord(t.dir)
	return fmt.Sprintf("the relay has refused this agent's credential (agent %s) since %s, longer than the %s grace: re-enroll this Mac with a new project token "+
		"(on the relay: line-relay token create --data RELAY_DATA_DIR > TOKEN_FILE; here: %s; then restart line-agent). "+
		"credentials.json is kept as it is for investigation (enroll keeps it as credentials.json.replaced-<time>), and the agent keeps trying it",
		c.AgentID, since, grace, cmd), true
}

// shellWord quotes s for a shell command an operator copies, when it needs
// it (the default data directory has a space in it).
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:@+-=,[]") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// keepFresh renews the access token at 80% of its lifetime for as long as
// ctx lives, so a reconnect never starts with an expired token. It waits on
// the wall clock in steps of at most renewTick, so after the Mac sleeps past
// the renewal time it renews soon after the wake (and token renews before
// any use in between). A failed renewal is retried after renewRetry, whether
// or not the token expires sooner; the session also renews before its next
// try after an Unauthenticated answer.
func (t *tokenSource) keepFresh(ctx context.Context, log func(error)) {
	for {
		if !t.sleepUntil(ctx, t.renewAt()) {
			return
		}
		_, err := t.fresh(ctx, false)
		if ctx.Err() != nil {
			return
		}
		if err == nil && !t.wall().Before(t.renewAt()) {
			// Only a clock far from the relay's makes a new token due at
			// once; asking again at every tick would not help.
			err = errors.New("the renewed access token is already due for renewal: is this Mac's clock right?")
		}
		if err != nil {
			log(err)
			if !t.sleepUntil(ctx, t.wall().Add(renewRetry)) {
				return
			}
		}
	}
}

// sleepUntil waits until the wall clock reaches at, looking at least every
// renewTick (see renewTick); false when ctx ended first.
func (t *tokenSource) sleepUntil(ctx context.Context, at time.Time) bool {
	for {
		wait := at.Sub(t.wall())
		if wait <= 0 {
			return ctx.Err() == nil
		}
		timer := time.NewTimer(min(wait, renewTick))
		select {
		case <-ctx.Done():
			timer.Stop()
			return false
		case <-timer.C:
		}
	}
}
