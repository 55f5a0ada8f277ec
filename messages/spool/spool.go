// Package spool is the agent's one intake of relay-supplied assets.
//
// Fetcher downloads an HTTPS URL (retries, a time limit, a size cap held
// while streaming, no redirect away from HTTPS, only public addresses
// dialled on every hop, errors that never quote the URL's path or query);
// every driver that takes a URL uses it. Admit is the one rule that refuses
// programs and scripts, by the name a file is written under and by its
// content; every driver that writes a file for Messages uses it. Spool
// stages the files commands carry for the private-API helper (bytes or a
// fetched URL, admitted, written into a folder Messages can read; it
// satisfies bridge.Stager), and Image takes a chat background in: JPEG,
// PNG, HEIC or HEIF by content, staged under a generated name in the
// agent's own spool directory.
package spool

import (
	"context"
	"net/http"
	"net/url"
	"path"
	"path/filepath"
	"time"

	"github.com/line-agent/line-agent/command"
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
	// HTTPClient supplies TLS settings (roots) and a cookie jar; the spool
	// sets its own dialer (the address guard), proxy (none), timeout and
	// redirect policy (see Fetcher). Default Go's default transport.
	HTTPClient *http.Client
	// AllowLoopbackForTests lets the Fetcher dial loopback addresses
	// (127.0.0.0/8, ::1). For tests only, which fetch from an httptest
	// server on 127.0.0.1: the agent never sets it. See
	// Fetcher.AllowLoopbackForTests.
	AllowLoopbackForTests bool
}

// Spool is a bridge.Stager that also downloads, and the intake of chat
// backgrounds (Image).
type Spool struct {
	opts  Options
	dir   bridge.DirStager
	fetch Fetcher
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
	return &Spool{opts: opts, dir: bridge.DirStager{Dir: opts.Dir},
		fetch: Fetcher{Client: opts.HTTPClient, MaxBytes: opts.MaxBytes, Timeout: opts.FetchTimeout,
			AllowLoopbackForTests: opts.AllowLoopbackForTests}}
}

func invalid(format string, args ...any) *command.Error {
	return command.Errorf(linev1.ErrorCode_ERROR_CODE_INVALID_ARGUMENT, format, args...)
}

// Stage checks a, downloads it when it is a URL, and writes it to a fresh
// folder; release removes it.
func (s *Spool) Stage(ctx context.Context, a bridge.Asset) (string, func(), error) {
	if int64(len(a.Data)) > s.opts.MaxBytes {
		return "", nil, invalid("the file is %d bytes, over the %d-byte limit", len(a.Data), s.opts.MaxBytes)
	}
	if len(a.Data) == 0 && a.URL != "" {
		data, err := s.fetch.Fetch(ctx, a.URL)
		if err != nil {
			return "", nil, err
		}
		if a.Name == "" {
			a.Name = urlName(a.URL)
		}
		a.Data, a.URL = data, ""
	}
	name, err := Admit(a.Name, a.MimeType, a.Data)
	if err != nil {
		return "", nil, err
	}
	// The name judged is the name written: it already carries the declared
	// type's extension, so the stager must not add one.
	a.Name, a.MimeType = name, ""
	staged, release, err := s.dir.Stage(ctx, a)
	if err != nil {
		return "", nil, err
	}
	if filepath.Base(staged) != name {
		release()
		return "", nil, command.Errorf(linev1.ErrorCode_ERROR_CODE_INTERNAL, "the stager wrote the file under another name than the one judged")
	}
	return staged, release, nil
}

// urlName is the last segment of a URL's path, as the file's name when the
// command gave none ("" for a URL without one). It is judged like any name
// (Admit) and never repeated in an error.
func urlName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	switch base := path.Base(u.Path); base {
	case ".", "/":
		return ""
	default:
		return base
	}
}
