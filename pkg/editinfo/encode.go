package editinfo

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"

	"howett.net/plist"

	"github.com/line-agent/line-agent/pkg/typedstream"
)

type encVersion struct {
	T   []byte  `plist:"t"`
	D   float64 `plist:"d"`
	BCG string  `plist:"bcg,omitempty"`
}

type encRange struct {
	LE int64 `plist:"le"`
	LO int64 `plist:"lo"`
}

type encSummary struct {
	EC  map[string][]encVersion `plist:"ec,omitempty"`
	EP  []int64                 `plist:"ep,omitempty"`
	OTR map[string]encRange     `plist:"otr,omitempty"`
	RP  []int64                 `plist:"rp,omitempty"`
}

// Encode writes s as a message_summary_info binary property list, with the
// keys Messages uses ("ec", "ep", "otr", "rp"), so that the simulated
// Messages can store edited and unsent messages that Decode, and readers of
// real chat.db files, understand.
//
// Each version's text is written as an attributedBody typedstream with
// typedstream.Encode: with the version's Runs, or when Runs is nil with one
// run marking the whole text as the version's part, as Messages does. Dates
// are written at microsecond precision. Unsent parts go to "rp", and "ep"
// lists the parts that have versions.
//
// Deleted must equal len(s.Unsent) > 0 (it is derived, and Encode refuses to
// write a summary that would not decode to itself). Part indexes and range
// values must be non-negative and fit an int32, and every part in Parts
// needs at least one version.
func Encode(s Summary) ([]byte, error) {
	if s.Deleted != (len(s.Unsent) > 0) {
		return nil, errors.New("editinfo: encode: Deleted must be true exactly when Unsent is not empty")
	}
	var out encSummary
	if len(s.Parts) > 0 {
		out.EC = make(map[string][]encVersion, len(s.Parts))
	}
	for part, versions := range s.Parts {
		if err := checkIndex(part); err != nil {
			return nil, err
		}
		if len(versions) == 0 {
			return nil, fmt.Errorf("editinfo: encode: part %d has no versions", part)
		}
		enc := make([]encVersion, 0, len(versions))
		for i, v := range versions {
			d, err := appleSeconds(v.Date)
			if err != nil {
				return nil, fmt.Errorf("editinfo: encode: part %d version %d: %w", part, i, err)
			}
			as := typedstream.AttributedString{Text: v.Text, Runs: v.Runs}
			if v.Runs == nil && v.Text != "" {
				p := part
				as.Runs = []typedstream.Run{{Start: 0, Length: utf16Len(v.Text), Part: &p}}
			}
			t, err := typedstream.Encode(as)
			if err != nil {
				return nil, fmt.Errorf("editinfo: encode: part %d version %d: %w", part, i, err)
			}
			enc = append(enc, encVersion{T: t, D: d, BCG: v.GUID})
		}
		out.EC[strconv.Itoa(part)] = enc
		out.EP = append(out.EP, int64(part))
	}
	sort.Slice(out.EP, func(i, j int) bool { return out.EP[i] < out.EP[j] })
	seen := make(map[int]bool, len(s.Unsent))
	for _, p := range s.Unsent {
		if err := checkIndex(p); err != nil {
			return nil, err
		}
		if seen[p] {
			return nil, fmt.Errorf("editinfo: encode: part %d unsent twice", p)
		}
		seen[p] = true
		out.RP = append(out.RP, int64(p))
	}
	sort.Slice(out.RP, func(i, j int) bool { return out.RP[i] < out.RP[j] })
	if len(s.Ranges) > 0 {
		out.OTR = make(map[string]encRange, len(s.Ranges))
		for part, r := range s.Ranges {
			if err := checkIndex(part); err != nil {
				return nil, err
			}
			if r.Location < 0 || r.Length < 0 || r.Location > math.MaxInt32 || r.Length > math.MaxInt32 {
				return nil, fmt.Errorf("editinfo: encode: range of part %d out of range", part)
			}
			out.OTR[strconv.Itoa(part)] = encRange{LE: int64(r.Length), LO: int64(r.Location)}
		}
	}
	return plist.Marshal(out, plist.BinaryFormat)
}

func checkIndex(part int) error {
	if part < 0 || part > math.MaxInt32 {
		return fmt.Errorf("editinfo: encode: part index %d out of range", part)
	}
	return nil
}

// utf16Len returns the length of s in UTF-16 code units.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}
