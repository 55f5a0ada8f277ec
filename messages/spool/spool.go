// Package spool is the agent's one intake of relay-supplied assets.
//
// Fetcher downloads an HTTPS URL (retries, a time limit, a size cap held
// while streaming, no redirect away from HTTPS, errors that never quote
// the URL's path or query); every driver that takes a URL uses it. Spool
// stages the files commands carry for the private-API helper (bytes or a
// fetched URL, refused when they are programs or scripts, written into a
// folder Messages can read; it satisfies bridge.Stager), and Image takes a
// chat background in: JPEG, PNG, HEIC or HEIF by content, staged under a
// generated name in the agent's own spool directory.
package spool

import (
	"bytes"
	"context"
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
	// HTTPClient supplies the transport (proxy, TLS roots); the spool sets
	// its own timeout and redirect policy (see Fetcher). Default Go's
	// default transport.
	HTTPClient *http.Client
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
		fetch: Fetcher{Client: opts.HTTPClient, MaxBytes: opts.MaxBytes, Timeout: opts.FetchTimeout}}
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
		data, err := s.fetch.Fetch(ctx, a.URL)
		if err != nil {
			return "", nil, err
		}
		if a.Name == "" {
			if u, err := url.Parse(a.URL); err == nil {
				a.Name = filepath.Base(u.Path)
			}
		}
		a.Data, a.URL = data, ""
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
