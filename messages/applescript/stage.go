package applescript

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stagedPrefix starts every staged file name; the recipient sees the name
// (Messages sends it as the transfer name), so it says what it is.
const stagedPrefix = "attachment-"

// stager writes attachments where sandboxed Messages can read them. Messages
// cannot read the agent's own data directory, and a relay-supplied path is
// never read, so every file goes through here.
type stager struct {
	dir string
}

// prepareDir creates the staging directory 0700 (only this user, which is
// also Messages' user) and refuses a symlink or a non-directory in its place,
// so nothing can redirect staged files elsewhere.
func (s stager) prepareDir() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("creating the staging directory: %w", err)
	}
	fi, err := os.Lstat(s.dir)
	if err != nil {
		return fmt.Errorf("checking the staging directory: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
		return fmt.Errorf("staging directory %s is not a plain directory", s.dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(s.dir, 0o700); err != nil {
			return fmt.Errorf("restricting the staging directory: %w", err)
		}
	}
	return nil
}

// stage writes data under a generated name keeping only ext, and returns the
// file's path. The name is random so that it cannot collide, cannot be
// steered by a caller, and identifies the attachment row in chat.db.
func (s stager) stage(data []byte, ext string) (string, error) {
	if err := s.prepareDir(); err != nil {
		return "", err
	}
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	name := stagedPrefix + hex.EncodeToString(rnd[:])
	if ext != "" {
		name += "." + ext
	}
	path := filepath.Join(s.dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("staging the attachment: %w", err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("staging the attachment: %w", err)
	}
	return path, nil
}
