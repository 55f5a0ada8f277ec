//go:build !unix

package chatdb

import "os"

// fileID is a weaker identity where inodes are not available: it only tells
// a missing file from a present one, so replacement is detected by the
// ROWID sequence going backwards alone.
func fileID(path string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		if os.IsNotExist(err) {
			return "", nil
		}
		return "", err
	}
	return "present", nil
}
