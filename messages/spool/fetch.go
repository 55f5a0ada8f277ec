package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/line-agent/line-agent/command"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Fetcher defaults for its zero fields.
const (
	DefaultRetries      = 2
	DefaultRetryWaitMin = 200 * time.Millisecond
	DefaultRetryWaitMax = 2 * time.Second
	// MaxRedirects bounds a URL's redirect chain.
	MaxRedirects = 5
)

// Fetcher is the one way the agent downloads a relay-supplied URL
// (attachments, chat backgrounds). The zero value is usable.
//
// What it guarantees:
//   - only absolute https URLs with a host and no credentials, and no
//     redirect away from https (or more than MaxRedirects of them);
//   - only public internet addresses are dialled, on the first hop and on
//     every redirect: the guard (guard.go) resolves each host itself,
//     refuses it when any of its addresses is loopback, link-local,
//     private, CGNAT, multicast, broadcast, unspecified or otherwise
//     reserved (IPv4-mapped forms included), and dials the address it
//     checked. No proxy is used (HTTPS_PROXY and friends are ignored): a
//     proxy would dial on the agent's behalf, out of the guard's sight;
//   - transient failures (connection errors, HTTP 5xx except 501, 429) are
//     retried with capped exponential backoff; other 4xx are not;
//   - Timeout bounds everything (attempts, backoff waits and the body);
//   - MaxBytes is enforced while streaming: a body is never read past
//     MaxBytes+1, and a declared Content-Length over it is refused unread;
//   - errors name the host only, never the path or the query string (which
//     may carry a signed token).
//
// Errors are *command.Error:
//   - INVALID_ARGUMENT: a bad URL, a host (first or redirected to) whose
//     address the guard refuses, HTTP 4xx other than 429 (404 included:
//     the relay's URL points at nothing, retrying will not help), a redirect
//     away from https, a body over MaxBytes or empty, or Timeout passing
//     ("did not finish within");
//   - UNAVAILABLE: the server kept failing (5xx, 429, connection errors)
//     after the retries, or ctx was cancelled;
//   - DEADLINE_EXCEEDED: ctx's own deadline passed first (the command's
//     deadline, not the fetch limit), with LastState saying what it was doing;
//   - INTERNAL: Client's Transport is not an *http.Transport (the guard
//     could not be put in it).
type Fetcher struct {
	// Client supplies TLS settings (roots, client certificates) through its
	// Transport, which must be an *http.Transport or nil, and a cookie jar.
	// The Fetcher uses a copy of that transport with its own dialer (the
	// guard) and no proxy; the client's Timeout and CheckRedirect are not
	// used either. A caller's client cannot switch the guard off.
	// Default: a copy of Go's default transport.
	Client *http.Client
	// MaxBytes caps the body. Default DefaultMaxBytes.
	MaxBytes int64
	// Timeout bounds one Fetch, retries and body included. Default
	// DefaultFetchTimeout.
	Timeout time.Duration
	// Retries is how many times a transient failure is retried: 0 means
	// DefaultRetries, a negative value none.
	Retries int
	// RetryWaitMin and RetryWaitMax bound the backoff between attempts
	// (a server's Retry-After included). Defaults 200 ms and 2 s.
	RetryWaitMin, RetryWaitMax time.Duration
	// Noun names what is fetched in error messages ("the attachment").
	// Default "the file".
	Noun string
	// AllowLoopbackForTests lets the guard dial loopback addresses
	// (127.0.0.0/8, ::1, and their IPv4-mapped forms); every other refused
	// range stays refused. It exists for tests, which fetch from an
	// httptest server on 127.0.0.1, and is never set by the agent:
	// production refuses loopback.
	AllowLoopbackForTests bool

	// lookup and dial replace the guard's resolver and its dial of a
	// checked address (tests: no real name is resolved, and no address
	// but loopback is ever dialled).
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (f *Fetcher) maxBytes() int64 {
	if f.MaxBytes > 0 {
		return f.MaxBytes
	}
	return DefaultMaxBytes
}

func (f *Fetcher) timeout() time.Duration {
	if f.Timeout > 0 {
		return f.Timeout
	}
	return DefaultFetchTimeout
}

func (f *Fetcher) noun() string {
	if f.Noun != "" {
		return f.Noun
	}
	return "the file"
}

// CheckURL accepts only absolute https URLs with a host and no credentials
// (credentials in a URL end up in logs and errors). A relay-supplied string
// is never a local path. Its errors never repeat the URL.
func CheckURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, invalid("the url is empty")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, invalid("the url does not parse")
	case u.Scheme != "https":
		scheme := u.Scheme
		if len(scheme) > 16 {
			scheme = scheme[:16] + "..."
		}
		return nil, invalid("the url must be https, not %q", scheme)
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, invalid("the url has no host")
	case u.User != nil:
		return nil, invalid("the url must not carry credentials")
	}
	return u, nil
}

// redirectError stops a redirect the Fetcher refuses; it is never retried.
type redirectError struct{ why string }

func (e *redirectError) Error() string { return e.why }

var errNotHTTPS = &redirectError{"redirect to a non-HTTPS URL"}

// Fetch returns the body of rawURL, or a typed error (see Fetcher).
func (f *Fetcher) Fetch(parent context.Context, rawURL string) ([]byte, error) {
	u, err := CheckURL(rawURL)
	if err != nil {
		return nil, err
	}
	rc, tr, err := f.client()
	if err != nil {
		return nil, err
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(parent, f.timeout())
	defer cancel()
	limit := f.maxBytes()

	resp, err := rc.Do(mustRequest(ctx, u))
	if err != nil {
		return nil, f.classify(parent, ctx, u, err)
	}
	defer resp.Body.Close() // unread: the connection is dropped, the server stops
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("fetching %s from %s: HTTP %d %s", f.noun(), u.Host, resp.StatusCode, http.StatusText(resp.StatusCode))
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "%s", msg)
		}
		return nil, invalid("%s", msg)
	}
	if resp.ContentLength > limit {
		return nil, invalid("%s at %s is %d bytes, over the %d-byte limit", f.noun(), u.Host, resp.ContentLength, limit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	// A body that "ends" once the deadline passed may have been cut short by
	// the cancellation itself (HTTP/2 can report a clean end), so the
	// deadline wins over what the read said.
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	switch {
	case err != nil:
		return nil, f.classify(parent, ctx, u, err)
	case int64(len(data)) > limit:
		return nil, invalid("%s at %s is over the %d-byte limit", f.noun(), u.Host, limit)
	case len(data) == 0:
		return nil, invalid("%s at %s is empty", f.noun(), u.Host)
	}
	return data, nil
}

func mustRequest(ctx context.Context, u *url.URL) *retryablehttp.Request {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil { // a parsed https URL and a nil body: cannot happen
		panic(err)
	}
	return req
}

// transport is a copy of f.Client's transport (or of Go's default) whose
// only dialer is the guard and which uses no proxy.
func (f *Fetcher) transport() (*http.Transport, error) {
	var base *http.Transport
	var rt http.RoundTripper
	if f.Client != nil {
		rt = f.Client.Transport
	}
	switch t := rt.(type) {
	case nil:
		if d, ok := http.DefaultTransport.(*http.Transport); ok {
			base = d
		} else {
			base = &http.Transport{ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second,
				IdleConnTimeout: 90 * time.Second, ExpectContinueTimeout: time.Second}
		}
	case *http.Transport:
		base = t
	default:
		return nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL,
			"the fetcher's HTTP client has a %T transport; only an *http.Transport can carry the address guard", rt)
	}
	tr := base.Clone()
	tr.Proxy = nil
	tr.OnProxyConnectResponse = nil
	tr.ProxyConnectHeader, tr.GetProxyConnectHeader = nil, nil
	// Cleared so that nothing dials around the guard.
	tr.Dial, tr.DialTLS, tr.DialTLSContext = nil, nil, nil
	tr.DialContext = guard{allowLoopback: f.AllowLoopbackForTests, lookup: f.lookup, dial: f.dial}.DialContext
	return tr, nil
}

// client builds the retrying client for one Fetch on a guarded copy of
// f.Client's transport (closed by the caller once done), with the
// Fetcher's redirect policy and no logger (it would log the URL).
func (f *Fetcher) client() (*retryablehttp.Client, *http.Transport, error) {
	tr, err := f.transport()
	if err != nil {
		return nil, nil, err
	}
	hc := &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" || req.URL.User != nil {
			return errNotHTTPS
		}
		if len(via) > MaxRedirects {
			return &redirectError{fmt.Sprintf("more than %d redirects", MaxRedirects)}
		}
		return nil
	}}
	if f.Client != nil {
		hc.Jar = f.Client.Jar
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = hc
	rc.Logger = nil
	rc.RetryMax = f.Retries
	switch {
	case f.Retries == 0:
		rc.RetryMax = DefaultRetries
	case f.Retries < 0:
		rc.RetryMax = 0
	}
	rc.RetryWaitMin, rc.RetryWaitMax = f.RetryWaitMin, f.RetryWaitMax
	if rc.RetryWaitMin <= 0 {
		rc.RetryWaitMin = DefaultRetryWaitMin
	}
	if rc.RetryWaitMax <= 0 {
		rc.RetryWaitMax = DefaultRetryWaitMax
	}
	if rc.RetryWaitMax < rc.RetryWaitMin {
		rc.RetryWaitMax = rc.RetryWaitMin
	}
	rc.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		var re *redirectError
		var ae *addressError
		if errors.As(err, &re) || errors.As(err, &ae) {
			return false, nil
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	// A server's Retry-After is honoured up to RetryWaitMax, never beyond.
	rc.Backoff = func(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
		return min(retryablehttp.DefaultBackoff(lo, hi, attempt, resp), hi)
	}
	// The last response or error as it is: classify and the status check
	// above type it (the default handler would wrap it with the full URL).
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return rc, tr, nil
}

// classify types a transport or body error without leaking the URL's path
// or query. parent is the caller's context, ctx the Fetch's own.
func (f *Fetcher) classify(parent, ctx context.Context, u *url.URL, err error) error {
	if parent.Err() != nil { // the command's own deadline, not the fetch limit
		e := command.AsError(parent.Err())
		e.LastState = "fetching " + f.noun() + " from " + u.Host
		return e
	}
	err = stripURL(err, u)
	var re *redirectError
	var ae *addressError
	switch {
	case errors.As(err, &ae) && strings.EqualFold(ae.host, u.Hostname()):
		return invalid("%s at %s is not fetched: the host has %s; only public internet addresses are fetched", f.noun(), u.Host, ae.why)
	case errors.As(err, &ae):
		return invalid("the url of %s at %s redirected to %s, which has %s; only public internet addresses are fetched", f.noun(), u.Host, ae.host, ae.why)
	case errors.Is(err, errNotHTTPS):
		return invalid("the url of %s at %s redirected to a non-HTTPS url", f.noun(), u.Host)
	case errors.As(err, &re):
		return invalid("the url of %s at %s redirected more than %d times", f.noun(), u.Host, MaxRedirects)
	case ctx.Err() != nil || isTimeout(err):
		return invalid("fetching %s from %s did not finish within %s", f.noun(), u.Host, f.timeout())
	}
	return &command.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
		Msg: fmt.Sprintf("fetching %s from %s failed", f.noun(), u.Host), Err: err}
}

// isTimeout reports a net-level timeout anywhere in err's chain.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// stripURL drops every *url.Error layer (each names a full URL, the
// redirect targets' included) and, should the rest still quote u's path or
// query, hides them: a signed query string never reaches a log or the relay.
func stripURL(err error, u *url.URL) error {
	for {
		var ue *url.Error
		if !errors.As(err, &ue) {
			break
		}
		err = ue.Err
	}
	msg := err.Error()
	red := msg
	for _, secret := range []string{u.RawQuery, u.EscapedPath(), u.Path} {
		if len(secret) > 1 {
			red = strings.ReplaceAll(red, secret, "[redacted]")
		}
	}
	if red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}

// redactedError is err with a scrubbed message; errors.Is/As still see err.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
