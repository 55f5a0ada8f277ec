//go:build unix

package chatdb

import (
	"fmt"
	"os"
	"syscall"
)

// fileID names a file by device and inode, which is what changes when
// Messages (or a restore) replaces chat.db or re-creates its WAL, even though
// the path stays the same. "" means the file does not exist.
func fileID(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return "", nil
		}
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("m%d-%d", fi.ModTime().UnixNano(), fi.Size()), nil
	}
	return fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino)), nil
}
