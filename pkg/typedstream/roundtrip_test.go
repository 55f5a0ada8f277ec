package typedstream

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// whole returns a run covering all of text with the given attributes set by f.
func whole(text string, f func(*Run)) Run {
	r := Run{Start: 0, Length: utf16Len(text)}
	if f != nil {
		f(&r)
	}
	return r
}

// at returns a run over the UTF-16 range of sub, which must occur in text.
func at(text, sub string, f func(*Run)) Run {
	i := strings.Index(text, sub)
	if i < 0 {
		panic("substring not found: " + sub)
	}
	r := Run{Start: utf16Len(text[:i]), Length: utf16Len(sub)}
	if f != nil {
		f(&r)
	}
	return r
}

func part(n int) func(*Run) { return func(r *Run) { r.Part = intp(n) } }

func roundTrip(t *testing.T, in AttributedString) {
	t.Helper()
	b, err := Encode(in)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := in
	want.Runs = append([]Run{}, in.Runs...)
	want.SetByteOffsets()
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("round trip\n got %+v\nwant %+v", got, &want)
	}
	for _, r := range got.Runs {
		if r.ByteStart+r.ByteLength > len(got.Text) {
			t.Fatalf("run %+v beyond text", r)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	family := "👩‍👩‍👧‍👦 family"
	rtl := "مرحبا بالعالم שלום עולם"
	attach := "\uFFFC\uFFFCtwo photos"
	big := strings.Repeat("0123456789abcdéf🙂", 100*1024/20)
	cases := map[string]AttributedString{
		"plain":     {Text: "hello", Runs: []Run{whole("hello", part(0))}},
		"no runs":   {Text: "no attributes at all", Runs: []Run{}},
		"emoji zwj": {Text: family, Runs: []Run{at(family, "👩‍👩‍👧‍👦", part(0)), at(family, " family", part(1))}},
		"rtl":       {Text: rtl, Runs: []Run{whole(rtl, func(r *Run) { r.Part = intp(0); r.Other = map[string]string{KeyBaseWritingDirection: "1"} })}},
		"attachments": {Text: attach, Runs: []Run{
			{Start: 0, Length: 1, Part: intp(0), AttachmentGUID: "at_0_6B1E2A3C-0000-4000-8000-000000000001"},
			{Start: 1, Length: 1, Part: intp(1), AttachmentGUID: "at_1_6B1E2A3C-0000-4000-8000-000000000002"},
			at(attach, "two photos", part(2)),
		}},
		"100KB": {Text: big, Runs: []Run{whole(big, part(0))}},
		"int32 lengths and many runs": func() AttributedString {
			text := strings.Repeat("x", 70000)
			var runs []Run
			for i := 0; i < 70000; i += 7000 {
				runs = append(runs, Run{Start: i, Length: 7000, Part: intp(i / 7000 % 3), Bold: i%2 == 0})
			}
			return AttributedString{Text: text, Runs: runs}
		}(),
		"mention link styles effect": {Text: "hi @Ann see https://example.com/a?b=c now", Runs: []Run{
			at("hi @Ann see https://example.com/a?b=c now", "hi ", part(0)),
			at("hi @Ann see https://example.com/a?b=c now", "@Ann", func(r *Run) { r.Part = intp(0); r.Mention = "+15555550100" }),
			at("hi @Ann see https://example.com/a?b=c now", " see ", func(r *Run) { r.Part = intp(0); r.Bold, r.Italic = true, true }),
			at("hi @Ann see https://example.com/a?b=c now", "https://example.com/a?b=c", func(r *Run) {
				r.Part = intp(0)
				r.Link = "https://example.com/a?b=c"
			}),
			at("hi @Ann see https://example.com/a?b=c now", " now", func(r *Run) {
				r.Part = intp(0)
				r.Underline, r.Strikethrough, r.TextEffect = true, true, 5
				r.Other = map[string]string{"custom": "value", KeyTextBoldFake: ""}
			}),
		}},
		"gaps and reused dictionaries": {Text: "aaaa bbbb aaaa", Runs: []Run{
			{Start: 0, Length: 4, Part: intp(7)},
			{Start: 10, Length: 4, Part: intp(7)},
		}},
		"negative and large part": {Text: "xy", Runs: []Run{
			{Start: 0, Length: 1, Part: intp(-5)},
			{Start: 1, Length: 1, Part: intp(1 << 30), TextEffect: 40000},
		}},
		"no part only guid": {Text: "\uFFFC", Runs: []Run{{Start: 0, Length: 1, AttachmentGUID: "G"}}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { roundTrip(t, c) })
	}
}

// KeyTextBoldFake is an unknown key that only looks like a Messages key.
const KeyTextBoldFake = "__kIMTextBoldAttributeNameX"

func TestEncodeTextRoundTrip(t *testing.T) {
	for _, text := range []string{"a", "Noter test", "👩‍👩‍👧‍👦", "שלום", strings.Repeat("é", 40000), "bad \xff utf8"} {
		as, err := Decode(EncodeText(text))
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		want := strings.ToValidUTF8(text, "\uFFFD")
		if as.Text != want || len(as.Runs) != 1 || *as.Runs[0].Part != 0 ||
			as.Runs[0].Length != utf16Len(want) || as.Runs[0].ByteLength != len(want) {
			t.Fatalf("%q: got %+v", text, as)
		}
	}
	if _, err := Decode(EncodeText("")); !errors.Is(err, ErrNoText) {
		t.Fatalf("empty text: %v, want ErrNoText", err)
	}
}

func TestEncodeRejects(t *testing.T) {
	cases := map[string]AttributedString{
		"invalid utf8":   {Text: "\xff"},
		"zero length":    {Text: "ab", Runs: []Run{{Start: 0, Length: 0, Part: intp(0)}}},
		"overlap":        {Text: "abc", Runs: []Run{{Start: 0, Length: 2, Bold: true}, {Start: 1, Length: 2, Bold: true}}},
		"past end":       {Text: "abc", Runs: []Run{{Start: 2, Length: 2, Bold: true}}},
		"negative start": {Text: "abc", Runs: []Run{{Start: -1, Length: 2, Bold: true}}},
		"split pair":     {Text: "🙂", Runs: []Run{{Start: 0, Length: 1, Bold: true}, {Start: 1, Length: 1, Italic: true}}},
		"part too big":   {Text: "a", Runs: []Run{{Start: 0, Length: 1, Part: intp(1 << 40)}}},
		"duplicate key":  {Text: "a", Runs: []Run{{Start: 0, Length: 1, Part: intp(0), Other: map[string]string{KeyMessagePart: "1"}}}},
		"link in other":  {Text: "a", Runs: []Run{{Start: 0, Length: 1, Other: map[string]string{KeyLink: "x"}}}},
		"empty key":      {Text: "a", Runs: []Run{{Start: 0, Length: 1, Other: map[string]string{"": "x"}}}},
	}
	for name, c := range cases {
		if _, err := Encode(c); err == nil {
			t.Errorf("%s: Encode accepted %+v", name, c)
		}
	}
}

// A hand-built big-endian archive whose root is a bare NSString with a
// length that needs the int16 form.
func TestBigEndianBareString(t *testing.T) {
	text := strings.Repeat("b", 300)
	b := []byte{4, 11}
	b = append(b, "typedstream"...)
	b = append(b, 0x81, 0x03, 0xE8) // 1000, big-endian
	b = append(b, 0x84, 1, '@')     // group "@"
	b = append(b, 0x84, 0x84, 0x84, 8)
	b = append(b, "NSString"...)
	b = append(b, 1, 0x85)      // version 1, no superclass
	b = append(b, 0x84, 1, '+') // group "+"
	b = append(b, 0x81, 0x01, 0x2C)
	b = append(b, text...)
	b = append(b, 0x86)
	as, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if as.Text != text || len(as.Runs) != 0 || as.Runs == nil {
		t.Fatalf("got %+v", as)
	}
}

func header() []byte {
	b := []byte{4, 11}
	b = append(b, "streamtyped"...)
	return append(b, 0x81, 0xE8, 0x03)
}

func TestMalformed(t *testing.T) {
	str := func(length ...byte) []byte {
		b := header()
		b = append(b, 0x84, 1, '@', 0x84, 0x84, 0x84, 8)
		b = append(b, "NSString"...)
		b = append(b, 1, 0x85, 0x84, 1, '+')
		return append(b, length...)
	}
	deep := header()
	for i := 0; i < 200; i++ {
		deep = append(deep, 0x84, 1, '@', 0x84, 0x84, 0x84, 1, 'X', 0, 0x85)
	}
	cases := map[string][]byte{
		"empty":              {},
		"bad version":        append([]byte{3}, header()[1:]...),
		"bad signature":      append([]byte{4, 11}, "streamtypex\x81\xe8\x03"...),
		"huge length":        str(0x82, 0xff, 0xff, 0xff, 0x7f, 'a', 'b'),
		"huge length int16":  str(0x81, 0xff, 0x7f, 'a'),
		"dangling reference": append(header(), 0x84, 1, '@', 0x84, 0xA0),
		"string reference":   append(header(), 0xA0),
		"bad type":           append(header(), 0x84, 1, 'v', 0),
		"empty struct":       append(header(), 0x84, 2, '{', '}'),
		"zero array":         append(header(), 0x84, 4, '[', '0', 'i', ']'),
		"huge array":         append(header(), 0x84, 12, '[', '2', '0', '0', '0', '0', '0', '0', '0', '0', 'c', ']', 1, 2),
		"tag as integer":     append(header(), 0x84, 1, 'i', 0x87),
		"deep nesting":       deep,
	}
	for name, b := range cases {
		as, err := Decode(b)
		var fe *FormatError
		if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %+v, %v; want a *FormatError", name, as, err)
			continue
		}
		if fe.Offset < 0 || fe.Offset > len(b) {
			t.Errorf("%s: offset %d outside the input", name, fe.Offset)
		}
	}
	// A header alone, or a nil root, is well formed but holds no text.
	for name, b := range map[string][]byte{
		"header only": header(),
		"nil root":    append(header(), 0x84, 1, '@', 0x85),
		"int root":    append(header(), 0x84, 1, 'i', 5, 0x84, 1, '@', 0x84, 0x84, 0x84, 1, 'X', 0, 0x85, 0x86),
	} {
		if _, err := Decode(b); !errors.Is(err, ErrNoText) {
			t.Errorf("%s: %v, want ErrNoText", name, err)
		}
	}
}

// A string whose length field overruns the data is recovered up to the next
// end marker, and the text never extends past the input.
func TestRecoveredOverrun(t *testing.T) {
	b := header()
	b = append(b, 0x84, 1, '@', 0x84, 0x84, 0x84, 8)
	b = append(b, "NSString"...)
	b = append(b, 1, 0x85, 0x84, 1, '+', 0x82, 0xff, 0xff, 0xff, 0x7f)
	b = append(b, "héllo"...)
	b = append(b, 0x86, 0xAA, 0xBB) // end of the NSString, then junk
	as, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if as.Text != "héllo" || !as.Recovered {
		t.Fatalf("got %+v", as)
	}
}
