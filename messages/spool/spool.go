// Package spool stages the files commands carry (attachments, backgrounds)
// for the private-API helper: bytes or an HTTPS URL fetched under a size cap
// and a time limit, refused when they are programs or scripts, and written
// into a folder Messages can read. It satisfies bridge.Stager.
package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/line-agent/line-agent/messages"
	"github.com/line-agent/line-agent/messages/bridge"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// Defaults for Options' zero values.
const (
	DefaultMaxBytes     = 100 << 20
	DefaultFetchTimeout = 60 * time.Second
)

// Options configure New.
type Options struct {
	// Dir is where files are staged (must be readable by Messages on a
	// Mac). Default bridge.DefaultStager().Dir.
	Dir string
	// MaxBytes caps a file, given as bytes or fetched. Default 100 MB.
	MaxBytes int64
	// FetchTimeout bounds one download, body included. Default 60 s.
	FetchTimeout time.Duration
	// HTTPClient supplies the transport (proxy, TLS roots). Default
	// http.DefaultClient's transport.
	HTTPClient *http.Client
}

// Spool is a bridge.Stager that also downloads.
type Spool struct {
	opts Options
	dir  bridge.DirStager
}

var _ bridge.Stager = (*Spool)(nil)

// New returns a Spool.
func New(opts Options) *Spool {
	if opts.Dir == "" {
		opts.Dir = bridge.DefaultStager().Dir
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	return &Spool{opts: opts, dir: bridge.DirStager{Dir: opts.Dir}}
}

func invalid(format string, args ...any) *messages.Error {
	return messages.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, format, args...)
}

// Stage checks a, downloads it when it is a URL, and writes it to a fresh
// folder; release removes it.
func (s *Spool) Stage(ctx context.Context, a bridge.Asset) (string, func(), error) {
	if int64(len(a.Data)) > s.opts.MaxBytes {
		return "", nil, invalid("the file is %d bytes, over the %d-byte limit", len(a.Data), s.opts.MaxBytes)
	}
	if len(a.Data) == 0 && a.URL != "" {
		u, err := checkURL(a.URL)
		if err != nil {
			return "", nil, err
		}
		data, err := s.fetch(ctx, u)
		if err != nil {
			return "", nil, err
		}
		a.Data, a.URL = data, ""
		if a.Name == "" {
			a.Name = filepath.Base(u.Path)
		}
	}
	if err := Check(a.Name, a.MimeType, a.Data); err != nil {
		return "", nil, err
	}
	return s.dir.Stage(ctx, a)
}

// forbidden are extensions of programs, scripts, installers, disk images
// and link files: never sent.
var forbidden = map[string]bool{
	"app": true, "exe": true, "dll": true, "com": true, "bat": true, "cmd": true, "msi": true, "scr": true,
	"sh": true, "bash": true, "zsh": true, "command": true, "tool": true, "py": true, "pl": true, "rb": true,
	"js": true, "jar": true, "vbs": true, "ps1": true, "applescript": true, "scpt": true, "workflow": true,
	"pkg": true, "mpkg": true, "dmg": true, "iso": true, "lnk": true, "webloc": true, "inetloc": true,
	"terminal": true, "dylib": true, "so": true, "kext": true, "action": true, "bin": true,
}

var forbiddenMIME = []string{"application/x-msdownload", "application/x-sh", "application/x-executable",
	"application/x-mach-binary", "application/x-apple-diskimage", "application/vnd.microsoft.portable-executable",
	"text/x-shellscript", "application/x-msdos-program"}

var magic = []struct {
	b    []byte
	what string
}{
	{[]byte("MZ"), "a Windows program"},
	{[]byte("\x7fELF"), "an ELF program"},
	{[]byte{0xcf, 0xfa, 0xed, 0xfe}, "a Mach-O program"},
	{[]byte{0xce, 0xfa, 0xed, 0xfe}, "a Mach-O program"},
	{[]byte{0xca, 0xfe, 0xba, 0xbe}, "a Mach-O universal program"},
	{[]byte("#!"), "a script"},
}

// Check refuses programs and scripts by content, name or declared type.
func Check(name, mimeType string, data []byte) error {
	if len(data) == 0 {
		return invalid("the file is empty")
	}
	for _, m := range magic {
		if bytes.HasPrefix(data, m.b) {
			return invalid("the file is %s; programs and scripts are not sent", m.what)
		}
	}
	ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(name), "."))
	if forbidden[ext] {
		return invalid("files of type .%s are not sent (programs, scripts, installers, disk images and links are refused)", ext)
	}
	mt := strings.ToLower(strings.TrimSpace(mimeType))
	for _, f := range forbiddenMIME {
		if strings.HasPrefix(mt, f) {
			return invalid("files of type %s are not sent", mimeType)
		}
	}
	return nil
}

func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, invalid("the url does not parse")
	case u.Scheme != "https":
		return nil, invalid("the url must be https, not %q", u.Scheme)
	case u.Host == "":
		return nil, invalid("the url has no host")
	case u.User != nil:
		return nil, invalid("the url must not carry credentials")
	}
	return u, nil
}

var errNotHTTPS = errors.New("redirect to a non-HTTPS URL")

// fetch downloads u within FetchTimeout and MaxBytes. A wrong, missing,
// too large or too slow URL is INVALID_ARGUMENT; a failing server is
// UNAVAILABLE. Errors name the host only (a query may be signed).
func (s *Spool) fetch(parent context.Context, u *url.URL) ([]byte, error) {
	ctx, cancel := context.WithTimeout(parent, s.opts.FetchTimeout)
	defer cancel()
	hc := &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return errNotHTTPS
		}
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return nil
	}}
	if s.opts.HTTPClient != nil {
		hc.Transport = s.opts.HTTPClient.Transport
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, invalid("the url is not usable")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, s.classify(parent, ctx, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return nil, messages.Errorf(linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, "fetching the file from %s: HTTP %d", u.Host, resp.StatusCode)
		}
		return nil, invalid("fetching the file from %s: HTTP %d", u.Host, resp.StatusCode)
	}
	if resp.ContentLength > s.opts.MaxBytes {
		return nil, invalid("the file at %s is %d bytes, over the %d-byte limit", u.Host, resp.ContentLength, s.opts.MaxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, s.opts.MaxBytes+1))
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		return nil, s.classify(parent, ctx, u, err)
	}
	if int64(len(data)) > s.opts.MaxBytes {
		return nil, invalid("the file at %s is over the %d-byte limit", u.Host, s.opts.MaxBytes)
	}
	return data, nil
}

func (s *Spool) classify(parent, ctx context.Context, u *url.URL, err error) error {
	if parent.Err() != nil { // the command's own deadline, not the fetch limit
		e := messages.AsError(parent.Err())
		e.LastState = "fetching the file"
		return e
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, errNotHTTPS):
		return invalid("the url at %s redirected to a non-HTTPS url", u.Host)
	case ctx.Err() != nil:
		return invalid("fetching the file from %s did not finish within %s", u.Host, s.opts.FetchTimeout)
	}
	return &messages.Error{Code: linev1.ErrorCode_ERROR_CODE_UNAVAILABLE, Msg: fmt.Sprintf("fetching the file from %s failed", u.Host), Err: err}
}
