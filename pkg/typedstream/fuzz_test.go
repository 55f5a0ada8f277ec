package typedstream

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// checkInvariants asserts what Decode promises for any input.
func checkInvariants(t testing.TB, b []byte, as *AttributedString, err error) {
	t.Helper()
	if err != nil {
		var fe *FormatError
		if !errors.Is(err, ErrNoText) && !errors.As(err, &fe) {
			t.Fatalf("error of unexpected type %T: %v", err, err)
		}
		if errors.Is(err, ErrNoText) && as != nil {
			t.Fatal("ErrNoText with a result")
		}
		if fe != nil && (fe.Offset < 0 || fe.Offset > len(b)) {
			t.Fatalf("error offset %d outside input of %d bytes", fe.Offset, len(b))
		}
	} else if as == nil || as.Text == "" {
		t.Fatal("nil error without text")
	}
	if as == nil {
		return
	}
	if !utf8.ValidString(as.Text) {
		t.Fatal("text is not valid UTF-8")
	}
	// Invalid bytes become U+FFFD (3 bytes), so text can be at most three
	// times the input; it is usually a strict sub-slice.
	if len(as.Text) > 3*len(b) {
		t.Fatalf("text of %d bytes from %d bytes of input", len(as.Text), len(b))
	}
	if len(as.Runs) > len(b) || as.Runs == nil {
		t.Fatalf("%d runs from %d bytes of input", len(as.Runs), len(b))
	}
	total := utf16Len(as.Text)
	u16, bytes := 0, 0
	for _, r := range as.Runs {
		if r.Length <= 0 || r.Start < u16 || r.Start+r.Length > total {
			t.Fatalf("run %+v out of order or out of the text (%d UTF-16 units)", r, total)
		}
		if r.ByteLength < 0 || r.ByteStart < bytes || r.ByteStart+r.ByteLength > len(as.Text) {
			t.Fatalf("run %+v has bad byte offsets (text %d bytes)", r, len(as.Text))
		}
		u16, bytes = r.Start+r.Length, r.ByteStart+r.ByteLength
		if len(r.Other) > MaxOtherKeys {
			t.Fatalf("run has %d Other keys", len(r.Other))
		}
		for k, v := range r.Other {
			if len(k) > MaxOtherKeyLen || len(v) > MaxOtherValueLen {
				t.Fatalf("Other entry %q=%q too long", k, v)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	if files, _ := filepath.Glob(filepath.Join(sharedDir, "*.typedstream")); len(files) > 0 {
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	for _, text := range []string{"", "hi", "👩‍👩‍👧‍👦 family", "\uFFFC\uFFFC", strings.Repeat("é", 200)} {
		f.Add(EncodeText(text))
	}
	rich, err := Encode(AttributedString{Text: "\uFFFC hi @Ann https://x.y/ z", Runs: []Run{
		{Start: 0, Length: 1, Part: intp(0), AttachmentGUID: "G"},
		{Start: 1, Length: 4, Part: intp(1), Bold: true},
		{Start: 5, Length: 4, Part: intp(1), Mention: "a@b.c"},
		{Start: 10, Length: 11, Part: intp(1), Link: "https://x.y/", TextEffect: 5},
		{Start: 21, Length: 2, Part: intp(1), Other: map[string]string{"k": "v"}},
	}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rich)
	f.Add(rich[:len(rich)/2])

	f.Fuzz(func(t *testing.T, b []byte) {
		var as *AttributedString
		var err error
		got := allocated(func() { as, err = Decode(b) })
		if got > allocBudget(len(b)) {
			t.Fatalf("allocated %d bytes for %d bytes of input", got, len(b))
		}
		checkInvariants(t, b, as, err)
		if err != nil {
			return
		}
		// Whatever decodes and can be written back decodes the same again.
		enc, err := Encode(*as)
		if err != nil {
			return
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		want := *as
		want.Recovered = false
		if !reflect.DeepEqual(again, &want) {
			t.Fatalf("re-decode\n got %+v\nwant %+v", again, &want)
		}
	})
}
