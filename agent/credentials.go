package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

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
	// CAFile is the relay CA copied into the data directory, empty for the
	// system roots.
	CAFile    string `json:"ca_file,omitempty"`
	Plaintext bool   `json:"plaintext,omitempty"`
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
	// Addr is host:port.
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
	var tc credentials.TransportCredentials
	if o.Plaintext {
		if !isLoopback(o.Addr) {
			return nil, fmt.Errorf("dial %s: %w", o.Addr, ErrPlaintextNotLoopback)
		}
		tc = insecure.NewCredentials()
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
			}
			cfg.RootCAs = pool
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
	return grpc.NewClient(o.Addr, opts...)
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
		IssuedAt: time.Now(), Relay: o.Addr, Plaintext: o.Plaintext,
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
	if err := c.Save(o.DataDir); err != nil {
		return nil, fmt.Errorf("enroll: save credentials: %w", err)
	}
	return c, nil
}

// tokenSource hands out the current access token and renews it at 80% of its
// lifetime with the agent secret. Its clock is the time package's (fake inside
// a testing/synctest bubble), for the check and the renewal timer alike.
type tokenSource struct {
	dir    string
	client linev1.LineRelayClient

	mu sync.Mutex
	// creds is the current credential set; guarded by mu.
	creds *Credentials
}

// token returns a valid access token, refreshing first when 80% of its
// lifetime has passed or force is set (the relay said Unauthenticated).
func (t *tokenSource) token(ctx context.Context, force bool) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.creds
	ttl := c.ExpiresAt.Sub(c.IssuedAt)
	if !force && c.AccessToken != "" && time.Now().Before(c.IssuedAt.Add(ttl*8/10)) {
		return c.AccessToken, nil
	}
	resp, err := t.client.Refresh(ctx, &linev1.RefreshRequest{AgentId: c.AgentID, AgentSecret: c.AgentSecret})
	if err != nil {
		return "", fmt.Errorf("refresh access token: %w", err)
	}
	nc := *c
	nc.AccessToken = resp.GetCredential().GetAccessToken()
	nc.ExpiresAt = resp.GetCredential().GetExpiresAt().AsTime()
	nc.IssuedAt = time.Now()
	if err := nc.Save(t.dir); err != nil {
		return "", fmt.Errorf("save refreshed credentials: %w", err)
	}
	t.creds = &nc
	return nc.AccessToken, nil
}

// renewAt is when the current token should be renewed: at 80% of its life.
func (t *tokenSource) renewAt() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.creds
	return c.IssuedAt.Add(c.ExpiresAt.Sub(c.IssuedAt) * 8 / 10)
}

// keepFresh renews the access token at 80% of its lifetime for as long as
// ctx lives, so a reconnect never starts with an expired token. A failed
// renewal is retried after a minute, whether or not the token expires
// sooner (a relay that is away would otherwise be asked in a tight loop);
// the session also renews before its next try after an Unauthenticated
// answer.
func (t *tokenSource) keepFresh(ctx context.Context, log func(error)) {
	for {
		wait := time.Until(t.renewAt())
		if wait < 0 {
			wait = 0
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		if _, err := t.token(ctx, false); err != nil && ctx.Err() == nil {
			log(err)
			retry := time.NewTimer(time.Minute)
			select {
			case <-ctx.Done():
				retry.Stop()
				return
			case <-retry.C:
			}
		}
	}
}
