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

// FuzzEncodeRoundTrip checks Decode(Encode(x)) == x for attributed strings
// built from arbitrary text cut into runs with varied attributes.
func FuzzEncodeRoundTrip(f *testing.F) {
	f.Add("hello world", uint8(3), "at_0_GUID", "https://example.com", int32(0), uint8(5))
	f.Add("👩‍👩‍👧‍👦 שלום \uFFFC x", uint8(1), "", "", int32(-3), uint8(0xff))
	f.Fuzz(func(t *testing.T, text string, step uint8, guid, link string, part int32, flags uint8) {
		text = strings.ToValidUTF8(text, "?")
		guid = strings.ToValidUTF8(guid, "?")
		link = strings.ToValidUTF8(link, "?")
		if text == "" {
			return
		}
		every := int(step%8) + 1
		as := AttributedString{Text: text}
		u16, start, n := 0, 0, 0
		for _, r := range text {
			if r >= 0x10000 {
				u16 += 2
			} else {
				u16++
			}
			n++
			if n%every != 0 && u16 != utf16Len(text) {
				continue
			}
			idx := len(as.Runs)
			run := Run{Start: start, Length: u16 - start, Part: intp(int(part) + idx%3)}
			if flags&1 != 0 && idx%2 == 0 {
				run.AttachmentGUID = guid
			}
			if flags&2 != 0 && idx%2 == 1 {
				run.Link = link
			}
			run.Bold = flags&4 != 0 && idx%3 == 0
			run.Italic = flags&8 != 0
			run.Underline = flags&16 != 0 && idx%2 == 0
			run.Strikethrough = flags&32 != 0
			if flags&64 != 0 {
				run.TextEffect = int(step)
				run.Mention = guid
			}
			if flags&128 != 0 && idx%2 == 0 {
				run.Other = map[string]string{"k" + guid: link}
			}
			as.Runs = append(as.Runs, run)
			start = u16
		}
		b, err := Encode(as)
		if err != nil {
			t.Fatalf("Encode(%+v): %v", as, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		as.SetByteOffsets()
		// Other values are clipped on decode.
		for i := range as.Runs {
			for k, v := range as.Runs[i].Other {
				if len(k) > MaxOtherKeyLen || len(v) > MaxOtherValueLen {
					return
				}
			}
		}
		if !reflect.DeepEqual(got, &as) {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, &as)
		}
	})
}
