package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/line-agent/line-agent/agent"
	"github.com/line-agent/line-agent/component"
	"github.com/line-agent/line-agent/pkg/servertime"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// relayDialTimeout bounds doctor's TLS dial of the relay.
const relayDialTimeout = 5 * time.Second

// Clock skew limits: past skewWarn the agent's deadlines and token
// renewals drift noticeably; past skewFail they misfire (a command's
// deadline can pass before it arrives).
const (
	skewWarn = 2 * time.Second
	skewFail = 30 * time.Second
)

const clockFix = "turn on System Settings > General > Date & Time > Set time and date automatically (sudo sntp -sS time.apple.com corrects it now); if the Mac is right, the relay's clock is wrong"

// target is the relay the agent would dial and the trust it would dial
// it with (agent.RelayTarget: the flags and environment, else what
// enrollment recorded).
func (d *doctor) target() (agent.DialOptions, error) {
	creds, err := agent.LoadCredentials(d.cfg.DataDir)
	if err != nil && d.cfg.Relay == "" {
		return agent.DialOptions{}, err
	}
	return agent.RelayTarget(d.cfg, creds), nil
}

// relay checks the relay is reachable with a certificate the enrolled CA
// signs, for this address. The running agent's stream up proves it; else
// (or to explain a stream that is down) doctor dials itself. The
// connection returned, nil when there is no relay to ask, serves the
// clock check.
func (d *doctor) relay(ctx context.Context) (finding, *grpc.ClientConn) {
	t, err := d.target()
	if err != nil {
		return finding{Name: component.Relay, Status: verdictFail, Detail: "no relay to check: " + err.Error(),
			Fix: "line-agent enroll --relay HOST:PORT --ca FILE --token-file FILE, or give doctor --relay HOST:PORT --ca FILE"}, nil
	}
	conn, cerr := agent.Dial(t)
	if cerr != nil {
		conn = nil
	}
	fromAgent, running := d.fromReport(component.Relay, "see the agent's log for why the stream is down")
	if running && fromAgent.Status == verdictPass {
		return fromAgent, conn
	}
	if cerr != nil {
		return finding{Name: component.Relay, Status: verdictFail, Detail: cerr.Error(), Fix: "check --ca / LINE_AGENT_CA_FILE and the relay address"}, nil
	}
	if t.Plaintext {
		return finding{Name: component.Relay, Status: verdictWarn, Detail: t.Addr + " is configured without TLS (loopback development only); not checked",
			Fix: "enroll against the relay's TLS address with its CA"}, conn
	}
	// Every replica of LINE_AGENT_RELAY=a:443,b:443 is checked: the agent
	// may fail over to any of them.
	var found []finding
	for _, addr := range strings.Split(t.Addr, ",") {
		found = append(found, checkTLS(ctx, strings.TrimSpace(addr), t.CAFile))
	}
	f := joinFindings(component.Relay, found)
	if running && f.Status == verdictPass {
		// The network and the certificate are fine from here: what keeps
		// the agent's stream down is the agent's to say.
		fromAgent.Detail += "; from this process " + f.Detail
		return fromAgent, conn
	}
	return f, conn
}

// checkTLS is one relay address's TLS check.
func checkTLS(ctx context.Context, addr, caFile string) finding {
	leaf, err := dialTLS(ctx, addr, caFile)
	if err != nil {
		return tlsFailure(addr, caFile, err)
	}
	trust := "the system roots"
	if caFile != "" {
		trust = caFile
	}
	return finding{Name: component.Relay, Status: verdictPass,
		Detail: fmt.Sprintf("TLS to %s verified against %s (certificate for %s, valid until %s)", addr, trust, certNames(leaf), leaf.NotAfter.UTC().Format(time.DateOnly))}
}

// joinFindings is several findings of one check as one: the worst verdict,
// every detail, the fixes of those that are not PASS.
func joinFindings(name string, fs []finding) finding {
	if len(fs) == 1 {
		return fs[0]
	}
	rank := map[string]int{verdictPass: 0, verdictSkip: 1, verdictWarn: 2, verdictFail: 3}
	out := finding{Name: name, Status: verdictPass}
	var details, fixes []string
	for _, f := range fs {
		if rank[f.Status] > rank[out.Status] {
			out.Status = f.Status
		}
		details = append(details, f.Detail)
		if f.Status != verdictPass && f.Fix != "" && !slices.Contains(fixes, f.Fix) {
			fixes = append(fixes, f.Fix)
		}
	}
	out.Detail, out.Fix = strings.Join(details, "; "), strings.Join(fixes, "; ")
	return out
}

// dialTLS does the TLS handshake the agent's connection does and returns
// the relay's certificate.
func dialTLS(ctx context.Context, addr, caFile string) (*x509.Certificate, error) {
	cfg, err := agent.TLSConfig(caFile)
	if err != nil {
		return nil, err
	}
	cfg.NextProtos = []string{"h2"} // what gRPC offers
	ctx, cancel := context.WithTimeout(ctx, relayDialTimeout)
	defer cancel()
	c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("the relay presented no certificate")
	}
	return certs[0], nil
}

// tlsFailure says plainly why the dial failed, and what to do.
func tlsFailure(addr, caFile string, err error) finding {
	f := finding{Name: component.Relay, Status: verdictFail}
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var opErr *net.OpError
	trust := "the system roots"
	if caFile != "" {
		trust = "the CA in " + caFile
	}
	switch {
	case errors.As(err, &unknown):
		f.Detail = fmt.Sprintf("%s answered with a certificate %s did not sign (%s)", addr, trust, certNames(unknown.Cert))
		f.Fix = "enroll again with the relay's current CA (line-agent enroll --ca FILE ...), or give --ca the CA that signs it; if the CA is right, something else answers on that address"
	case errors.As(err, &host):
		f.Detail = fmt.Sprintf("the relay's certificate is for %s, not %s", certNames(host.Certificate), host.Host)
		f.Fix = "dial the relay by a name its certificate holds (LINE_AGENT_RELAY / --relay), or reissue the certificate with this name"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		f.Detail = fmt.Sprintf("the relay's certificate is not valid now (%s, valid %s to %s; this Mac's clock says %s)", invalid.Detail,
			invalid.Cert.NotBefore.UTC().Format(time.RFC3339), invalid.Cert.NotAfter.UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
		f.Fix = "if this Mac's clock is wrong, " + clockFix + "; else renew the relay's certificate"
	case errors.As(err, &invalid):
		f.Detail, f.Fix = "the relay's certificate is invalid: "+invalid.Error(), "reissue the relay's certificate"
	case errors.As(err, &record):
		f.Detail, f.Fix = addr+" answered, but not with TLS (a plaintext relay, or another service)", "check the relay address (LINE_AGENT_RELAY / --relay)"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		f.Detail = fmt.Sprintf("no answer from %s within %s", addr, relayDialTimeout)
		f.Fix = "check the relay runs and that no firewall drops outbound TCP to it"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		f.Detail = fmt.Sprintf("cannot reach %s: %v", addr, opErr.Err)
		f.Fix = "check the address (line-agent config shows it), that the relay runs, and that outbound TCP to it is allowed"
	default:
		f.Detail, f.Fix = fmt.Sprintf("TLS to %s failed: %v", addr, err), "check the relay address and CA"
	}
	return f
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// certNames is what a certificate is for.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = append(names, c.Subject.CommonName)
	}
	return fmt.Sprint(names)
}

// clock measures this Mac's clock against the relay's: the relay stamps
// its Refresh answers with its time (pkg/servertime), so an empty Refresh,
// which it refuses at once and which changes nothing, is enough.
func (d *doctor) clock(ctx context.Context, conn *grpc.ClientConn) finding {
	f := finding{Name: checkClock}
	if conn == nil {
		f.Status, f.Detail = verdictSkip, "no relay to compare with"
		return f
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, relayDialTimeout)
	defer cancel()
	var header, trailer metadata.MD
	before := time.Now()
	_, err := linev1.NewLineRelayClient(conn).Refresh(ctx, &linev1.RefreshRequest{}, grpc.Header(&header), grpc.Trailer(&trailer))
	after := time.Now()
	relayNow, ok := servertime.From(header, trailer)
	if !ok {
		f.Status = verdictSkip
		f.Detail = "the relay did not say its time (a line-relay older than this agent, or unreachable)"
		if err != nil && ctx.Err() != nil {
			f.Detail = "the relay did not answer: " + err.Error()
		}
		return f
	}
	// The relay read its clock between before and after: compare with
	// the middle, within half the round trip.
	rtt := after.Sub(before)
	skew := relayNow.Sub(before.Add(rtt / 2))
	return judgeSkew(skew, rtt)
}

// judgeSkew is the clock finding for a measured skew (relay minus Mac).
func judgeSkew(skew, rtt time.Duration) finding {
	f := finding{Name: checkClock}
	abs := skew.Abs()
	ahead := "behind"
	if skew > 0 {
		ahead = "ahead of"
	}
	seen := fmt.Sprintf("the relay's clock is %s %s this Mac's (±%s)", abs.Round(time.Millisecond), ahead, (rtt / 2).Round(time.Millisecond))
	switch {
	case abs > skewFail:
		f.Status, f.Detail, f.Fix = verdictFail, seen+fmt.Sprintf(", over %s: command deadlines and token renewals misfire", skewFail), clockFix
	case abs > skewWarn:
		f.Status, f.Detail, f.Fix = verdictWarn, seen+fmt.Sprintf(", over %s", skewWarn), clockFix
	default:
		f.Status, f.Detail = verdictPass, seen
	}
	return f
}
