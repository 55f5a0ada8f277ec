package agent

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/line-agent/line-agent/component"
	linev1 "github.com/line-agent/line-agent/proto/line/v1"
)

// The "disk" component: free space on the filesystem holding the data
// directory. state.db's writes fail when it is full, and then commands are
// refused and chat.db's reading stalls (the journal component goes DOWN);
// this one warns before that.

// DiskSpace is what a filesystem has left.
type DiskSpace struct {
	// Free is the bytes an unprivileged process may still write.
	Free uint64
	// Total is the filesystem's size in bytes.
	Total uint64
}

// StatFS reads the free space of the filesystem holding path; tests
// inject one.
type StatFS func(path string) (DiskSpace, error)

// statFS is StatFS on the running system. syscall.Statfs has the same
// fields on linux and darwin (Bsize's type differs, hence the conversion).
func statFS(path string) (DiskSpace, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return DiskSpace{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return DiskSpace{Free: st.Bavail * bs, Total: st.Blocks * bs}, nil
}

// DiskLimits are the thresholds of the disk component.
type DiskLimits struct {
	// MinFree and MinFreePercent: below either, DEGRADED.
	MinFree        ByteSize
	MinFreePercent Percent
	// DownFree: below it, DOWN (state.db's next writes may fail).
	DownFree ByteSize
}

// DiskLimits are the configured disk thresholds.
func (c Config) DiskLimits() DiskLimits {
	return DiskLimits{MinFree: c.DiskMinFree, MinFreePercent: c.DiskMinFreePercent, DownFree: c.DiskDownFree}
}

// CheckDisk judges the free space where dir lives; stat nil reads the
// running system's. Doctor runs it too.
func CheckDisk(dir string, lim DiskLimits, stat StatFS) component.Check {
	if stat == nil {
		stat = statFS
	}
	ds, err := stat(dir)
	if err != nil {
		return component.Degraded("cannot read the free space of "+dir+": "+err.Error(), "check that the data directory exists and is readable")
	}
	pct := 100.0
	if ds.Total > 0 {
		pct = 100 * float64(ds.Free) / float64(ds.Total)
	}
	seen := fmt.Sprintf("%s free of %s (%.1f%%) where %s is", ByteSize(ds.Free), ByteSize(ds.Total), pct, dir)
	const fix = "free space on that disk (empty the Trash, remove old files in ~/Library/Messages/Attachments you no longer need, or move the data directory with LINE_AGENT_DATA_DIR)"
	switch {
	case ds.Free < uint64(lim.DownFree):
		return component.Down(seen+fmt.Sprintf(", under %s: state.db writes will fail, and then commands are refused", lim.DownFree), fix)
	case ds.Free < uint64(lim.MinFree) || pct < float64(lim.MinFreePercent):
		return component.Degraded(seen+fmt.Sprintf(", under %s or %.4g%%", lim.MinFree, float64(lim.MinFreePercent)), fix)
	}
	return component.OK(seen)
}

// diskComponent reports CheckDisk, with since when its status holds.
// statfs is a system call that answers at once for a local disk, so it runs
// on the health call.
type diskComponent struct {
	dir  string
	lim  DiskLimits
	stat StatFS
	now  func() time.Time

	mu sync.Mutex
	st sinceTracker // guarded by mu
}

func (d *diskComponent) component() *linev1.HealthComponent {
	c := CheckDisk(d.dir, d.lim, d.stat)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.set(c, d.now())
	return d.st.component(component.Disk)
}

// ErrBadByteSize is a size setting that is not a number of bytes with an
// optional unit.
var ErrBadByteSize = errors.New("not a size: want a number of bytes with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), such as 1GiB")

// ErrBadPercent is a percentage setting outside 0 to 100.
var ErrBadPercent = errors.New("not a percentage: want a number from 0 to 100")

// ByteSize is a number of bytes set as "1GiB", "100MiB" or "5000000",
// so that a threshold in the environment reads as what it means.
type ByteSize uint64

var byteUnits = []struct {
	suffix string
	mult   uint64
}{
	// Longest suffixes first: "MiB" before "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// Decode implements envconfig.Decoder.
func (b *ByteSize) Decode(s string) error {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := uint64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f*float64(mult) >= math.MaxUint64 {
		return fmt.Errorf("%q: %w", s, ErrBadByteSize)
	}
	*b = ByteSize(f * float64(mult))
	return nil
}

// String prints the size in the largest binary unit it fills, as
// `line-agent config` and details show it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		mult uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if uint64(b) >= u.mult {
			return strings.TrimSuffix(strconv.FormatFloat(float64(b)/float64(u.mult), 'f', 1, 64), ".0") + u.name
		}
	}
	return strconv.FormatUint(uint64(b), 10) + "B"
}

// Percent is a percentage from 0 to 100.
type Percent float64

// Decode implements envconfig.Decoder.
func (p *Percent) Decode(s string) error {
	f, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || f < 0 || f > 100 || math.IsNaN(f) {
		return fmt.Errorf("%q: %w", s, ErrBadPercent)
	}
	*p = Percent(f)
	return nil
}
