package bridge

import (
	"context"
	"mime"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unicode"

	"github.com/line-agent/line-agent/command"
)

// Asset is a file a command carries: bytes, or an HTTPS URL to fetch.
type Asset struct {
	Name     string
	MimeType string
	Data     []byte
	URL      string
}

// Stager turns an Asset into a local file Messages can read (it is
// sandboxed: a path under ~/Library/Messages or ~/Pictures works, most
// others do not). release removes it and is safe to call once the helper
// has answered, since the helper copies the file first.
type Stager interface {
	Stage(ctx context.Context, a Asset) (path string, release func(), err error)
}

// DefaultStager stages into a folder Messages can read: on macOS
// ~/Library/Messages/Attachments/line-agent (the sandbox lets Messages read
// its own folder; the agent has Full Disk Access to write there), elsewhere
// the temporary directory, which suits the simulated helper.
func DefaultStager() DirStager {
	if home, err := os.UserHomeDir(); err == nil && runtime.GOOS == "darwin" {
		return DirStager{Dir: filepath.Join(home, "Library", "Messages", "Attachments", "line-agent")}
	}
	return DirStager{Dir: filepath.Join(os.TempDir(), "line-agent-bridge")}
}

// DirStager writes assets given as bytes into a fresh folder under Dir.
// It fetches no URLs: downloading belongs to the agent's spool, which the
// agent wires in as the Driver's Stager.
type DirStager struct {
	// Dir must be readable by Messages on a real Mac.
	Dir string
}

// Stage writes a.Data to Dir/<random>/<safe name>.
func (s DirStager) Stage(_ context.Context, a Asset) (string, func(), error) {
	if a.URL != "" && len(a.Data) == 0 {
		return "", nil, invalid("this agent takes files as bytes: no downloader is configured for url sources")
	}
	if len(a.Data) == 0 {
		return "", nil, invalid("the file is empty")
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp(s.Dir, "send-")
	if err != nil {
		return "", nil, err
	}
	release := func() { _ = os.RemoveAll(dir) }
	path := filepath.Join(dir, safeFileName(a.Name, a.MimeType))
	if err := os.WriteFile(path, a.Data, 0o600); err != nil {
		release()
		return "", nil, err
	}
	return path, release, nil
}

// maxFileNameBytes bounds a staged file's name, below the 255 bytes a macOS
// file name may have, leaving room for an added extension.
const maxFileNameBytes = 200

// safeFileName keeps the last path element of name, without control
// characters, and adds an extension for the MIME type when it has none: the
// recipient sees this name, and Messages picks the preview by extension.
func safeFileName(name, mimeType string) string {
	name = filepath.Base(strings.ReplaceAll(name, `\`, "/"))
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '/' {
			return -1
		}
		return r
	}, name)
	if name == "" || name == "." || name == ".." || name == "/" {
		name = "attachment"
	}
	name = command.CutFileName(name, maxFileNameBytes)
	if filepath.Ext(name) == "" && mimeType != "" {
		if exts, _ := mime.ExtensionsByType(mimeType); len(exts) > 0 {
			name += exts[0]
		}
	}
	return name
}
