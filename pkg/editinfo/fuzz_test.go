package editinfo

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"
	"time"
)

func FuzzDecode(f *testing.F) {
	if files, _ := filepath.Glob(filepath.Join(sharedDir, "*.plist")); len(files) > 0 {
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	for _, s := range []Summary{
		{Parts: map[int][]Version{0: {{Text: "a", Date: at(1, 2)}, {Text: "b", Date: at(3, 4), GUID: "G"}}}},
		{Parts: map[int][]Version{}, Unsent: []int{0, 1}, Deleted: true, Ranges: map[int]Range{0: {0, 3}}},
	} {
		b, err := Encode(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s, err := Decode(b)
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 256*uint64(len(b))+256<<10 {
			t.Fatalf("allocated %d bytes for %d bytes of input", got, len(b))
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			if s != nil {
				t.Fatal("result with error")
			}
			return
		}
		if s.Parts == nil || s.Deleted != (len(s.Unsent) > 0) {
			t.Fatalf("inconsistent summary %+v", s)
		}
		enc, err := Encode(*s)
		if err != nil {
			return // e.g. a version whose runs split a surrogate pair
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		// Dates keep microsecond precision only near the present.
		for k, vs := range again.Parts {
			for i := range vs {
				if d := vs[i].Date.Sub(s.Parts[k][i].Date); d < -time.Millisecond || d > time.Millisecond {
					t.Fatalf("date moved by %v", d)
				}
				vs[i].Date = s.Parts[k][i].Date
			}
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("re-decode\n got %+v\nwant %+v", again, s)
		}
	})
}
