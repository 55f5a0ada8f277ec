package editinfo

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"howett.net/plist"

	"github.com/line-agent/line-agent/pkg/typedstream"
)

// sharedDir is the third-party test data (real message_summary_info values
// published by the GPL imessage-exporter project). It is never copied into
// this repository; CI has ../shared beside the clone.
const sharedDir = "../../../shared/testdata/edited-message"

func sampleDir(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(sharedDir); err != nil {
		t.Skip("the third-party test data at ../shared/testdata is absent")
	}
	return sharedDir
}

type expVersion struct {
	Text  string `json:"text"`
	Floor int64  `json:"date_apple_seconds_floor"`
	GUID  string `json:"guid"`
}

type expSummary struct {
	Deleted bool                    `json:"deleted"`
	Parts   map[string][]expVersion `json:"parts"`
}

func appleFloor(t time.Time) int64 {
	d := t.Sub(epoch)
	s := int64(d / time.Second)
	if d < 0 && d%time.Second != 0 {
		s--
	}
	return s
}

func sortedKeys[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

// expected.json numbers parts by their order in "ec" ("0" for the first
// edited part), while Summary.Parts uses the plist's own keys, which are the
// Messages part indexes (EditedToLink edits part 1: "ec" and "ep" say 1, and
// its versions' typedstreams carry __kIMMessagePartAttributeName = 1). Parts
// are therefore compared in order.
func TestSamplesMatchExpected(t *testing.T) {
	dir := sampleDir(t)
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]expSummary
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.plist"))
	if len(files) == 0 {
		t.Fatal("no samples")
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			exp, ok := want[name]
			if !ok {
				t.Fatalf("%s has no entry in expected.json", name)
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if s.Deleted != exp.Deleted {
				t.Errorf("deleted %v, want %v", s.Deleted, exp.Deleted)
			}
			var expKeys []int
			for k := range exp.Parts {
				n, err := strconv.Atoi(k)
				if err != nil {
					t.Fatal(err)
				}
				expKeys = append(expKeys, n)
			}
			sort.Ints(expKeys)
			gotKeys := sortedKeys(s.Parts)
			if len(gotKeys) != len(expKeys) {
				t.Fatalf("parts %v, want %d parts", gotKeys, len(expKeys))
			}
			for i, k := range gotKeys {
				got, wantV := s.Parts[k], exp.Parts[strconv.Itoa(expKeys[i])]
				if len(got) != len(wantV) {
					t.Fatalf("part %d: %d versions, want %d", k, len(got), len(wantV))
				}
				for j, v := range got {
					w := wantV[j]
					if v.Text != w.Text || appleFloor(v.Date) != w.Floor || v.GUID != w.GUID {
						t.Errorf("part %d version %d: got (%q, %d, %q), want (%q, %d, %q)",
							k, j, v.Text, appleFloor(v.Date), v.GUID, w.Text, w.Floor, w.GUID)
					}
					for _, r := range v.Runs {
						if r.Part == nil || *r.Part != k {
							t.Errorf("part %d version %d: run %+v names another part", k, j, r)
						}
					}
				}
			}
		})
	}
}

func readSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sampleDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeletedSample(t *testing.T) {
	s, err := Decode(readSample(t, "Deleted.plist"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Summary{
		Parts:   map[int][]Version{},
		Unsent:  []int{0},
		Deleted: true,
		Ranges:  map[int]Range{0: {Location: 0, Length: 13}},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v, want %+v", s, want)
	}
}

func TestEditedToLinkSample(t *testing.T) {
	s, err := Decode(readSample(t, "EditedToLink.plist"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Parts[1]; !ok || len(s.Parts) != 1 {
		t.Fatalf("parts %v, want only part 1", sortedKeys(s.Parts))
	}
	if want := map[int]Range{0: {0, 1}, 1: {1, 11}}; !reflect.DeepEqual(s.Ranges, want) {
		t.Errorf("ranges %+v, want %+v", s.Ranges, want)
	}
	v := s.Parts[1][1]
	if v.GUID != "292BF9C6-C9B8-4827-BE65-6EA1C9B5B384" || !strings.HasPrefix(v.Text, "https://") {
		t.Errorf("second version %+v", v)
	}
	// Microsecond precision of the stored double.
	if got := v.Date.Format(time.RFC3339Nano); got != "2022-11-19T01:39:32.181738Z" {
		t.Errorf("date %s", got)
	}
}

// Re-encoding every sample gives a plist that decodes to the same summary.
func TestSamplesReencode(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(sampleDir(t), "*.plist"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		s, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := Encode(*s)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !reflect.DeepEqual(again, s) {
			t.Errorf("%s: re-encoded\n%+v\nwant %+v", f, again, s)
		}
	}
}

func at(sec, micros int64) time.Time {
	return epoch.Add(time.Duration(sec)*time.Second + time.Duration(micros)*time.Microsecond)
}

func intp(n int) *int { return &n }

func TestRoundTrip(t *testing.T) {
	link := "see https://example.com/x"
	cases := map[string]Summary{
		"one edit": {Parts: map[int][]Version{0: {
			{Text: "helo", Date: at(690513474, 272551)},
			{Text: "hello", Date: at(690513480, 468557)},
		}}},
		"several parts, guid, runs": {Parts: map[int][]Version{
			1: {
				{Text: "here we go!", Date: at(700000000, 1)},
				{Text: link, Date: at(700000100, 999999), GUID: "292BF9C6-C9B8-4827-BE65-6EA1C9B5B384",
					Runs: []typedstream.Run{
						{Start: 0, Length: 4, ByteStart: 0, ByteLength: 4, Part: intp(1)},
						{Start: 4, Length: 21, ByteStart: 4, ByteLength: 21, Part: intp(1), Link: "https://example.com/x"},
					}},
			},
			3: {{Text: "👩‍👩‍👧 ok", Date: at(700000000, 0)}, {Text: "שלום", Date: at(700000001, 500000)}},
		}, Ranges: map[int]Range{0: {0, 1}, 1: {1, 11}, 3: {12, 7}}},
		"unsent": {Parts: map[int][]Version{}, Unsent: []int{0, 2}, Deleted: true, Ranges: map[int]Range{0: {0, 13}}},
		"edited and unsent": {Parts: map[int][]Version{1: {
			{Text: "a", Date: at(1, 0)}, {Text: "b", Date: at(2, 0)},
		}}, Unsent: []int{0}, Deleted: true},
		"empty":     {Parts: map[int][]Version{}},
		"old dates": {Parts: map[int][]Version{0: {{Text: "x", Date: at(-100000000, 250000)}}}},
		"same text twice": {Parts: map[int][]Version{0: {
			{Text: "same", Date: at(5, 0)}, {Text: "other", Date: at(6, 0)}, {Text: "same", Date: at(7, 0)},
		}}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(b), "bplist00") {
				t.Fatal("not a binary plist")
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			want := expectAfterRoundTrip(in)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// expectAfterRoundTrip is what Decode(Encode(in)) returns: nil Runs become
// the single part run Encode writes.
func expectAfterRoundTrip(in Summary) *Summary {
	out := in
	out.Parts = map[int][]Version{}
	for k, vs := range in.Parts {
		var nv []Version
		for _, v := range vs {
			if v.Runs == nil {
				v.Runs = []typedstream.Run{{Start: 0, Length: utf16Len(v.Text), ByteLength: len(v.Text), Part: intp(k)}}
			}
			nv = append(nv, v)
		}
		out.Parts[k] = nv
	}
	return &out
}

func TestEncodeRejects(t *testing.T) {
	cases := map[string]Summary{
		"deleted without unsent": {Deleted: true},
		"unsent without deleted": {Unsent: []int{0}},
		"negative part":          {Parts: map[int][]Version{-1: {{Text: "x"}}}},
		"no versions":            {Parts: map[int][]Version{0: {}}},
		"duplicate unsent":       {Unsent: []int{1, 1}, Deleted: true},
		"bad range":              {Ranges: map[int]Range{0: {-1, 2}}},
		"bad utf8":               {Parts: map[int][]Version{0: {{Text: "\xff"}}}},
		"date too far":           {Parts: map[int][]Version{0: {{Text: "x", Date: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(90000, 0, 0)}}}},
	}
	for name, s := range cases {
		if _, err := Encode(s); err == nil {
			t.Errorf("%s: Encode accepted %+v", name, s)
		}
	}
}

// Plists written by other means: integer dates are accepted; anything that
// is not a well-formed binary plist of the right shape is ErrMalformed.
func TestDecodeOtherPlists(t *testing.T) {
	body := typedstream.EncodeText("hi")
	intDate, err := plist.Marshal(map[string]any{
		"ec": map[string]any{"0": []any{map[string]any{"t": body, "d": int64(5)}}},
	}, plist.BinaryFormat)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(intDate)
	if err != nil {
		t.Fatal(err)
	}
	if v := s.Parts[0][0]; v.Text != "hi" || !v.Date.Equal(at(5, 0)) {
		t.Fatalf("got %+v", v)
	}

	xml, _ := plist.Marshal(map[string]any{"rp": []int{0}}, plist.XMLFormat)
	bad := func(v any) []byte {
		b, err := plist.Marshal(v, plist.BinaryFormat)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Top array [A, A] where A is one empty array shared by both slots.
	shared := []byte("bplist00")
	shared = append(shared, 0xA2, 1, 1, 0xA0, 8, 11)
	shared = append(shared, 0, 0, 0, 0, 0, 0, 1, 1)
	shared = append(shared, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12)
	cases := map[string][]byte{
		"empty":            nil,
		"xml":              xml,
		"root not dict":    bad([]int{1}),
		"ec not dict":      bad(map[string]any{"ec": "x"}),
		"part not number":  bad(map[string]any{"ec": map[string]any{"x": []any{map[string]any{"t": body, "d": 1.0}}}}),
		"no date":          bad(map[string]any{"ec": map[string]any{"0": []any{map[string]any{"t": body}}}}),
		"nan date":         bad(map[string]any{"ec": map[string]any{"0": []any{map[string]any{"t": body, "d": 1e300}}}}),
		"bad typedstream":  bad(map[string]any{"ec": map[string]any{"0": []any{map[string]any{"t": []byte("nope"), "d": 1.0}}}}),
		"negative unsent":  bad(map[string]any{"rp": []int{-1}}),
		"shared container": shared,
		"truncated":        bad(map[string]any{"rp": []int{0}})[:20],
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// A version without a typedstream decodes like one whose archive holds no
// text, and survives re-encoding unchanged.
func TestVersionWithoutBody(t *testing.T) {
	b, err := plist.Marshal(map[string]any{
		"ec": map[string]any{"0": []any{map[string]any{"d": 1.5}, map[string]any{"t": []byte{}, "d": 2.0}}},
	}, plist.BinaryFormat)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &Summary{Parts: map[int][]Version{0: {
		{Text: "", Runs: []typedstream.Run{}, Date: at(1, 500000)},
		{Text: "", Runs: []typedstream.Run{}, Date: at(2, 0)},
	}}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v, want %+v", s, want)
	}
	enc, err := Encode(*s)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Decode(enc); err != nil || !reflect.DeepEqual(again, want) {
		t.Fatalf("re-decoded %+v, %v", again, err)
	}
}
