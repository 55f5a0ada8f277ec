package procid

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// startOf reads field 22 of /proc/<pid>/stat (the start, in clock ticks
// since boot) and the boot's id, so that a pid reused after a reboot does
// not compare equal either. A zombie (state Z) or a dead task (X) is gone:
// it can no longer act.
func startOf(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: pid %d", ErrGone, pid)
	}
	if err != nil {
		return "", fmt.Errorf("procid: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself: the fields after it start at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", fmt.Errorf("procid: unreadable /proc/%d/stat", pid)
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 {
		return "", fmt.Errorf("procid: short /proc/%d/stat", pid)
	}
	if s := fields[0]; len(s) == 1 && (s[0] == 'Z' || s[0] == 'X' || s[0] == 'x') {
		return "", fmt.Errorf("%w: pid %d has exited", ErrGone, pid)
	}
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return string(bytes.TrimSpace(boot)) + "/" + string(fields[19]), nil
}
