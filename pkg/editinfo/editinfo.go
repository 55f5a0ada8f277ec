// Package editinfo reads and writes message.message_summary_info, the binary
// property list in which Messages (macOS 13 and later) records that a sent
// message was edited or that parts of it were unsent.
//
// Edited and unsent messages keep message.text NULL and their
// attributedBody at the latest version, so the edit history and the list of
// retracted parts exist only here. The keys this package understands:
//
//   - "ec" (edit content): a dictionary from message part index (as a
//     string, "0", "1", ...) to the list of versions of that part, oldest
//     first. Each version is a dictionary with "t", the part's text as an
//     attributedBody typedstream (see package typedstream), "d", the time of
//     the version in seconds since 2001-01-01 UTC (a real), and on some
//     versions "bcg", a GUID Messages attaches to versions that replaced or
//     were replaced by rich content (edits to and from links).
//   - "ep" (edited parts): the part indexes that have versions in "ec".
//   - "rp" (retracted parts): the part indexes that were unsent.
//   - "otr" (original text ranges): for each part index, "lo" and "le", the
//     location and length of the part in the original text, in UTF-16 code
//     units.
//
// Messages also writes keys whose meaning is not established ("amc", "ust",
// "euh"); they are ignored when decoding and not written when encoding.
//
// The part index is the value of the typedstream run attribute
// __kIMMessagePartAttributeName (typedstream.Run.Part) of the part in the
// message's attributedBody, which is how an edit or unsend is tied to the
// bubble it changed.
package editinfo

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"howett.net/plist"

	"github.com/line-agent/line-agent/pkg/typedstream"
)

// Summary is the decoded message_summary_info of one message.
type Summary struct {
	// Parts maps a message part index to the versions of that part, oldest
	// (the original) first and newest (what the bubble shows now) last. It
	// is never nil after Decode; parts that were not edited are absent.
	Parts map[int][]Version `json:"parts"`
	// Unsent lists, in increasing order, the part indexes the sender
	// retracted ("rp"). Their text is gone from chat.db.
	Unsent []int `json:"unsent,omitempty"`
	// Deleted is true when some part was unsent, for callers that only need
	// to show "this message was unsent". It always equals len(Unsent) > 0.
	Deleted bool `json:"deleted"`
	// Ranges gives, per part index, the part's place in the original text
	// ("otr"), nil when the plist has none.
	Ranges map[int]Range `json:"ranges,omitempty"`
}

// Range is the location and length of a message part in the original text,
// in UTF-16 code units as Apple stores them.
type Range struct {
	Location int `json:"location"`
	Length   int `json:"length"`
}

// Version is one version of an edited message part.
type Version struct {
	// Text is the text of the part in this version.
	Text string `json:"text"`
	// Runs are the attribute runs of the version's typedstream (part index,
	// links, mentions, ...), with offsets relative to Text. Versions that
	// share an identical typedstream in the plist share this slice: treat it
	// as read-only. On Encode, nil means one run marking the whole text as
	// the version's part, which is what Messages writes.
	Runs []typedstream.Run `json:"runs,omitempty"`
	// Date is when the version was written, in UTC, to the microsecond
	// (the plist stores a double of seconds since 2001-01-01, which holds
	// about that precision for present-day dates).
	Date time.Time `json:"date"`
	// GUID is the "bcg" value of the version, "" when absent. Messages sets
	// it on versions that involve rich content, such as an edit that turned
	// the text into a link or back.
	GUID string `json:"guid,omitempty"`
}

// ErrMalformed matches, through errors.Is, every error Decode returns for
// input that is not a valid message_summary_info.
var ErrMalformed = errors.New("editinfo: malformed message_summary_info")

// epoch is the origin of Apple's timestamps.
var epoch = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

// maxAppleSeconds bounds accepted dates (about ±3000 years) so that the
// conversion to time.Time cannot overflow.
const maxAppleSeconds = 1e11

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// number accepts a plist real or integer, as Apple writes dates as reals
// but other writers may not.
type number struct {
	v  float64
	ok bool
}

// UnmarshalPlist implements plist.Unmarshaler.
func (n *number) UnmarshalPlist(unmarshal func(any) error) error {
	var f float64
	if err := unmarshal(&f); err == nil {
		n.v, n.ok = f, true
		return nil
	}
	var i int64
	if err := unmarshal(&i); err != nil {
		return err
	}
	n.v, n.ok = float64(i), true
	return nil
}

type rawVersion struct {
	T   []byte `plist:"t"`
	D   number `plist:"d"`
	BCG string `plist:"bcg"`
}

type rawRange struct {
	LO int64 `plist:"lo"`
	LE int64 `plist:"le"`
}

type rawSummary struct {
	EC  map[string][]rawVersion `plist:"ec"`
	RP  []int64                 `plist:"rp"`
	OTR map[string]rawRange     `plist:"otr"`
}

// Decode parses a message_summary_info binary property list.
//
// Each version's "t" is decoded with typedstream.Decode; a version whose
// typedstream holds no text gets an empty Text. Errors wrap ErrMalformed
// (and, for a bad typedstream, the typedstream error too).
//
// Decode accepts only binary property lists, the only kind chat.db holds,
// and rejects plists in which an array or dictionary is reachable twice
// (Apple's writer never shares containers; sharing them would let a small
// input expand into a huge value). It never panics, and identical
// typedstreams referenced by several versions are decoded once.
func Decode(b []byte) (s *Summary, err error) {
	if err := checkTree(b); err != nil {
		return nil, err
	}
	var raw rawSummary
	if err := unmarshal(b, &raw); err != nil {
		return nil, malformed("%v", err)
	}
	out := &Summary{Parts: make(map[int][]Version, len(raw.EC))}
	type blobKey struct {
		p *byte
		n int
	}
	cache := make(map[blobKey]*typedstream.AttributedString)
	for key, raws := range raw.EC {
		part, err := partIndex(key)
		if err != nil {
			return nil, err
		}
		versions := make([]Version, 0, len(raws))
		for i, rv := range raws {
			if !rv.D.ok {
				return nil, malformed("part %d version %d has no date", part, i)
			}
			date, err := fromAppleSeconds(rv.D.v)
			if err != nil {
				return nil, malformed("part %d version %d: %v", part, i, err)
			}
			v := Version{Date: date, GUID: rv.BCG, Runs: []typedstream.Run{}}
			if len(rv.T) > 0 {
				k := blobKey{&rv.T[0], len(rv.T)}
				as, ok := cache[k]
				if !ok {
					as, err = decodeBody(rv.T)
					if err != nil {
						return nil, fmt.Errorf("%w: part %d version %d: %w", ErrMalformed, part, i, err)
					}
					cache[k] = as
				}
				v.Text, v.Runs = as.Text, as.Runs
			}
			versions = append(versions, v)
		}
		out.Parts[part] = versions
	}
	if len(raw.RP) > 0 {
		seen := make(map[int]bool, len(raw.RP))
		for _, p := range raw.RP {
			if p < 0 || p > math.MaxInt32 {
				return nil, malformed("unsent part index %d out of range", p)
			}
			if !seen[int(p)] {
				seen[int(p)] = true
				out.Unsent = append(out.Unsent, int(p))
			}
		}
		sort.Ints(out.Unsent)
		out.Deleted = true
	}
	if len(raw.OTR) > 0 {
		out.Ranges = make(map[int]Range, len(raw.OTR))
		for key, r := range raw.OTR {
			part, err := partIndex(key)
			if err != nil {
				return nil, err
			}
			if r.LO < 0 || r.LE < 0 || r.LO > math.MaxInt32 || r.LE > math.MaxInt32 {
				return nil, malformed("range of part %d out of range", part)
			}
			out.Ranges[part] = Range{Location: int(r.LO), Length: int(r.LE)}
		}
	}
	return out, nil
}

// unmarshal runs the plist decoder, turning any panic it lets through
// (it re-raises runtime errors) into an error.
func unmarshal(b []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plist decoder failed: %v", r)
		}
	}()
	_, err = plist.Unmarshal(b, v)
	return err
}

// decodeBody decodes the typedstream of one version. An archive without
// text is an empty version; a damaged one whose text survived is accepted.
func decodeBody(t []byte) (*typedstream.AttributedString, error) {
	as, err := typedstream.Decode(t)
	switch {
	case err == nil:
		return as, nil
	case errors.Is(err, typedstream.ErrNoText):
		return &typedstream.AttributedString{Runs: []typedstream.Run{}}, nil
	case as != nil:
		return as, nil
	}
	return nil, err
}

func partIndex(key string) (int, error) {
	n, err := strconv.Atoi(key)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return 0, malformed("part index %q is not a non-negative integer", key)
	}
	return n, nil
}

// epochUnix is epoch as a Unix time.
const epochUnix = 978307200

// fromAppleSeconds converts seconds since 2001 to a UTC time rounded to the
// microsecond, the precision a double holds for present-day dates, so that
// Encode and Decode agree exactly.
func fromAppleSeconds(sec float64) (time.Time, error) {
	if math.IsNaN(sec) || math.IsInf(sec, 0) || math.Abs(sec) > maxAppleSeconds {
		return time.Time{}, fmt.Errorf("date %v out of range", sec)
	}
	whole := math.Floor(sec)
	micros := int64(math.Round((sec - whole) * 1e6))
	return time.Unix(epochUnix+int64(whole), micros*1000).UTC(), nil
}

// appleSeconds converts a time to seconds since 2001 at microsecond
// precision, the inverse of fromAppleSeconds.
func appleSeconds(t time.Time) (float64, error) {
	t = t.Round(time.Microsecond)
	sec := t.Unix() - epochUnix
	if math.Abs(float64(sec)) > maxAppleSeconds {
		return 0, fmt.Errorf("date %v out of range", t)
	}
	return float64(sec) + float64(t.Nanosecond()/1000)/1e6, nil
}
