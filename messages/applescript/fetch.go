package applescript

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/line-agent/line-agent/messages"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// errRedirectNotHTTPS stops a redirect away from HTTPS: the attachment must
// arrive over TLS from start to end.
var errRedirectNotHTTPS = errors.New("redirect to a non-HTTPS URL")

// maxRedirects bounds the redirect chain of an attachment URL.
const maxRedirects = 5

// checkURL accepts only absolute https URLs with a host and no credentials
// (credentials in a URL end up in logs and in errors).
func checkURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, invalid("attachment URL is empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, invalid("attachment URL does not parse")
	}
	if u.Scheme != "https" {
		return nil, invalid("attachment URL must be https, not %q", u.Scheme)
	}
	if u.Host == "" {
		return nil, invalid("attachment URL has no host")
	}
	if u.User != nil {
		return nil, invalid("attachment URL must not carry credentials")
	}
	return u, nil
}

// fetcher downloads attachment URLs: HTTPS only (redirects included), at most
// max bytes, within timeout all told (retries and the body included).
type fetcher struct {
	base    *http.Client
	max     int64
	timeout time.Duration
}

// fetch returns the body of u. Failures are typed: the caller's URL being
// wrong, missing, too big or too slow is INVALID_ARGUMENT; a server that keeps
// failing (5xx, refused connections) is UNAVAILABLE, worth a retry later.
func (f fetcher) fetch(ctx context.Context, u *url.URL) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()

	// No Client.Timeout: ctx alone bounds the request and the body, so that
	// ctx.Err() tells a deadline from a clean end (see below).
	hc := &http.Client{}
	if f.base != nil {
		hc.Transport = f.base.Transport
		hc.Jar = f.base.Jar
	}
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return errRedirectNotHTTPS
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		return nil
	}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = hc
	rc.Logger = nil // it would log the full URL, signed query and all
	rc.RetryMax = 2
	rc.RetryWaitMin = 200 * time.Millisecond
	rc.RetryWaitMax = 2 * time.Second
	rc.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if errors.Is(err, errRedirectNotHTTPS) || ctx.Err() != nil {
			return false, ctx.Err()
		}
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler

	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, invalid("attachment URL is not usable")
	}
	resp, err := rc.Do(req)
	if err != nil {
		return nil, f.classify(ctx, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "fetching the attachment from %s: HTTP %d", u.Host, resp.StatusCode)
		}
		return nil, invalid("fetching the attachment from %s: HTTP %d", u.Host, resp.StatusCode)
	}
	if resp.ContentLength > f.max {
		return nil, invalid("attachment at %s is %d bytes, over the %d-byte limit", u.Host, resp.ContentLength, f.max)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, f.max+1))
	// A body that "ends" once the deadline passed may have been cut short by
	// the cancellation itself (HTTP/2 can report a clean end), so the
	// deadline wins over what the read said.
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, f.classify(ctx, u, err)
	}
	if int64(len(data)) > f.max {
		return nil, invalid("attachment at %s is over the %d-byte limit", u.Host, f.max)
	}
	return data, nil
}

// classify types a transport error without leaking the URL's path or query.
func (f fetcher) classify(ctx context.Context, u *url.URL, err error) error {
	switch {
	case errors.Is(err, errRedirectNotHTTPS):
		return invalid("attachment URL at %s redirected to a non-HTTPS URL", u.Host)
	case ctx.Err() != nil || isTimeout(err):
		return invalid("fetching the attachment from %s did not finish within %s", u.Host, f.timeout)
	case strings.Contains(err.Error(), "redirects"):
		return invalid("attachment URL at %s redirected more than %d times", u.Host, maxRedirects)
	}
	return &messages.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE,
		Msg: fmt.Sprintf("fetching the attachment from %s failed", u.Host), Err: stripURL(err)}
}

// isTimeout reports a net-level timeout anywhere in err's chain.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// stripURL drops the URL from a *url.Error so that a signed query string
// never reaches a log or the relay.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
