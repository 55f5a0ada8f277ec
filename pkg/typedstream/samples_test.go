package typedstream

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sharedDir is the third-party test data (real Messages archives published
// by the GPL imessage-exporter project). It is never copied into this
// repository; CI has ../shared beside the clone.
const sharedDir = "../../../shared/testdata/attributed-body"

func sampleDir(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(sharedDir); err != nil {
		t.Skip("the third-party test data at ../shared/testdata is absent")
	}
	return sharedDir
}

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sampleDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type sampleExpect struct {
	Text       *string `json:"text"`
	TextPrefix *string `json:"text_prefix"`
	Error      *string `json:"error"`
}

func TestSamplesMatchExpected(t *testing.T) {
	dir := sampleDir(t)
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]sampleExpect
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.typedstream"))
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
			as, err := Decode(b)
			switch {
			case exp.Error != nil:
				if !errors.Is(err, ErrNoText) || as != nil {
					t.Fatalf("got %+v, %v; want ErrNoText", as, err)
				}
			case exp.Text != nil:
				if err != nil {
					t.Fatal(err)
				}
				if as.Text != *exp.Text {
					t.Fatalf("text %q, want %q", as.Text, *exp.Text)
				}
			case exp.TextPrefix != nil:
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(as.Text, *exp.TextPrefix) {
					t.Fatalf("text %q lacks prefix %q", as.Text, *exp.TextPrefix)
				}
			default:
				t.Fatal("expected.json entry has no text, text_prefix or error")
			}
		})
	}
}

func intp(n int) *int { return &n }

func TestMultiPartRuns(t *testing.T) {
	as, err := Decode(readSample(t, "MultiPart.typedstream"))
	if err != nil {
		t.Fatal(err)
	}
	// Three attachments (U+FFFC) and three text bubbles, each its own
	// message part, in text order.
	type want struct {
		text string
		part int
		guid string
	}
	wants := []want{
		{"\uFFFC", 0, "at_0_F0668F79-20C2-49C9-A87F-1B007ABB0CED"},
		{"test 1", 1, ""},
		{"\uFFFC", 2, "at_2_F0668F79-20C2-49C9-A87F-1B007ABB0CED"},
		{"test 2 ", 3, ""},
		{"\uFFFC", 4, "at_4_F0668F79-20C2-49C9-A87F-1B007ABB0CED"},
		{"test 3", 5, ""},
	}
	if len(as.Runs) != len(wants) {
		t.Fatalf("got %d runs, want %d: %+v", len(as.Runs), len(wants), as.Runs)
	}
	u16 := 0
	for i, w := range wants {
		r := as.Runs[i]
		if got := as.Text[r.ByteStart : r.ByteStart+r.ByteLength]; got != w.text {
			t.Errorf("run %d covers %q, want %q", i, got, w.text)
		}
		if r.Start != u16 || r.Length != utf16Len(w.text) {
			t.Errorf("run %d at %d+%d (UTF-16), want %d+%d", i, r.Start, r.Length, u16, utf16Len(w.text))
		}
		u16 += r.Length
		if r.Part == nil || *r.Part != w.part {
			t.Errorf("run %d part %v, want %d", i, r.Part, w.part)
		}
		if r.AttachmentGUID != w.guid {
			t.Errorf("run %d guid %q, want %q", i, r.AttachmentGUID, w.guid)
		}
		if (w.guid != "") != (w.text == "\uFFFC") {
			t.Errorf("run %d: attachment GUID not on a U+FFFC", i)
		}
	}
}

func TestURLRun(t *testing.T) {
	as, err := Decode(readSample(t, "URL.typedstream"))
	if err != nil {
		t.Fatal(err)
	}
	const link = "https://github.com/ReagentX/Logria"
	want := []Run{{
		Start: 0, Length: len(link), ByteStart: 0, ByteLength: len(link),
		Part: intp(0),
		Link: link,
		Other: map[string]string{
			KeyBaseWritingDirection: "-1",
			KeyDataDetected:         "<NSData 582 bytes>",
		},
	}}
	if !reflect.DeepEqual(as.Runs, want) {
		t.Fatalf("runs %+v\nwant %+v", as.Runs, want)
	}
}

func TestExtraDataIsRecovered(t *testing.T) {
	as, err := Decode(readSample(t, "ExtraData.typedstream"))
	if err != nil {
		t.Fatal(err)
	}
	if !as.Recovered {
		t.Error("Recovered not set for a string whose length overruns the data")
	}
	// The stored run claims more than the recovered text; it is clipped.
	if len(as.Runs) != 1 || as.Runs[0].Start != 0 || as.Runs[0].Length != utf16Len(as.Text) {
		t.Errorf("runs %+v not clipped to the text", as.Runs)
	}
}

func TestPlainSamplesHavePartZero(t *testing.T) {
	for _, name := range []string{"AttributedBodyTextOnly.typedstream", "AttributedBodyTextOnly2.typedstream", "WeirdText.typedstream"} {
		as, err := Decode(readSample(t, name))
		if err != nil {
			t.Fatal(name, err)
		}
		if len(as.Runs) != 1 || as.Runs[0].Part == nil || *as.Runs[0].Part != 0 ||
			as.Runs[0].Length != utf16Len(as.Text) || as.Runs[0].ByteLength != len(as.Text) {
			t.Errorf("%s: runs %+v", name, as.Runs)
		}
	}
	// WeirdText is made of astral-plane letters: UTF-16 and byte lengths differ.
	as, _ := Decode(readSample(t, "WeirdText.typedstream"))
	if as.Runs[0].Length != 21 || as.Runs[0].ByteLength != 41 {
		t.Errorf("WeirdText run %+v, want 21 UTF-16 units and 41 bytes", as.Runs[0])
	}
}

// EncodeText writes exactly what Messages wrote for the same plain text.
func TestEncodeTextMatchesMessages(t *testing.T) {
	b := readSample(t, "AttributedBodyTextOnly.typedstream")
	if got := EncodeText("Noter test"); string(got) != string(b) {
		t.Fatalf("EncodeText differs from the Messages archive:\n got %x\nwant %x", got, b)
	}
}

// Every decodable sample survives Encode and a second Decode unchanged.
func TestSamplesReencode(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(sampleDir(t), "*.typedstream"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		as, err := Decode(b)
		if err != nil {
			continue
		}
		enc, err := Encode(*as)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		as.Recovered = false
		if !reflect.DeepEqual(again, as) {
			t.Errorf("%s: re-encoded\n%+v\nwant %+v", f, again, as)
		}
	}
}

// Every prefix of a real archive decodes without panicking; once the text is
// complete, a damaged tail still yields the text next to the error.
func TestSampleTruncations(t *testing.T) {
	b := readSample(t, "MultiPart.typedstream")
	full, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	sawPartial := false
	for n := 0; n < len(b); n++ {
		as, err := Decode(b[:n])
		if err == nil {
			t.Fatalf("prefix %d decoded without error", n)
		}
		var fe *FormatError
		if !errors.As(err, &fe) && !errors.Is(err, ErrNoText) {
			t.Fatalf("prefix %d: unexpected error type %T", n, err)
		}
		if as != nil {
			sawPartial = true
			if as.Text != full.Text {
				t.Fatalf("prefix %d: partial text %q", n, as.Text)
			}
			if len(as.Runs) > len(full.Runs) || !reflect.DeepEqual(as.Runs, full.Runs[:len(as.Runs)]) {
				t.Fatalf("prefix %d: partial runs %+v", n, as.Runs)
			}
		}
	}
	if !sawPartial {
		t.Error("no prefix returned a partial result")
	}
}
