package typedstream

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// allocBudget is the most Decode may allocate: a constant factor of the
// input plus a fixed allowance, whatever the input claims.
func allocBudget(n int) uint64 { return 48*uint64(n) + 64<<10 }

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// adversarial returns inputs built to make a decoder allocate or loop much
// more than their size.
func adversarial(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}

	// Many one-character runs alternating between two dictionaries.
	{
		const n = 50000
		as := AttributedString{Text: strings.Repeat("x", n)}
		for i := 0; i < n; i++ {
			as.Runs = append(as.Runs, Run{Start: i, Length: 1, Part: intp(i % 2), Bold: true})
		}
		b, err := Encode(as)
		if err != nil {
			t.Fatal(err)
		}
		out["many runs"] = b
	}

	// One dictionary with many tiny distinct keys.
	{
		r := Run{Start: 0, Length: 1, Other: map[string]string{}}
		for i := 0; i < 20000; i++ {
			r.Other[strconv.Itoa(i)] = ""
		}
		w := newWriter()
		w.header()
		w.typ("@")
		w.beginObject(chainMutableAttributedString)
		w.typ("@")
		w.beginObject(chainMutableString)
		w.typ("+")
		w.uint(1)
		w.buf = append(w.buf, 'x')
		w.end()
		w.typ("iI")
		w.int(1)
		w.uint(1)
		w.typ("@")
		w.dictionary(&r)
		// Many runs reusing that big dictionary.
		for i := 0; i < 20000; i++ {
			w.typ("iI")
			w.int(1)
			w.uint(1)
		}
		w.end()
		out["big dictionary"] = w.buf
	}

	// Many distinct type encodings, each compiled once.
	{
		b := header()
		for i := 0; i < 20000; i++ {
			name := strconv.Itoa(i)
			b = append(b, 0x84, byte(len(name)+4), '{')
			b = append(b, name...)
			b = append(b, '=', 'c', '}', 0)
		}
		out["many types"] = b
	}

	// A long type encoding used over and over.
	{
		b := header()
		b = append(b, 0x84, 0x81, 0x00, 0x02) // length 512
		b = append(b, strings.Repeat("c", 512)...)
		b = append(b, make([]byte, 512)...)
		for i := 0; i < 200; i++ {
			b = append(b, 0x92)
			b = append(b, make([]byte, 512)...)
		}
		out["long type"] = b
	}

	// Many small objects of an unknown class nested to the depth limit.
	{
		b := header()
		b = append(b, 0x84, 1, '@', 0x84, 0x84, 0x84, 1, 'X', 0, 0x85)
		for i := 0; i < 20000; i++ {
			b = append(b, 0x92, 0x84, 0x93, 0x86)
		}
		b = append(b, 0x86)
		out["many objects"] = b
	}

	// Many nested attributed strings and URLs sharing one long NSString.
	{
		big := strings.Repeat("é", 50000)
		w := newWriter()
		w.header()
		w.typ("@")
		w.beginObject([]classDef{{"X", 0}}) // objects 0 and 1
		w.typ("@")
		w.stringObject(big) // object 2
		w.typ("@")
		baseIdx := w.nObjs
		w.url("https://example.com/") // the base URL object
		for i := 0; i < 10000; i++ {
			w.typ("@")
			w.beginObject(chainMutableAttributedString)
			w.typ("@")
			w.ref(2)
			w.typ("iI")
			w.int(1)
			w.uint(50000)
			w.end()
			w.typ("@")
			w.beginObject(chainURL)
			w.typ("c")
			w.buf = append(w.buf, 1)
			w.typ("@")
			w.ref(baseIdx)
			w.typ("@")
			w.ref(2)
			w.end()
		}
		w.end()
		out["shared long string"] = w.buf
	}

	// Huge length fields everywhere.
	{
		b := header()
		for i := 0; i < 1000; i++ {
			b = append(b, 0x84, 0x82, 0xff, 0xff, 0xff, 0x7f)
		}
		out["huge lengths"] = b
	}
	return out
}

func TestDecodeBounds(t *testing.T) {
	for name, b := range adversarial(t) {
		t.Run(name, func(t *testing.T) {
			var as *AttributedString
			var err error
			start := time.Now()
			got := allocated(func() { as, err = Decode(b) })
			elapsed := time.Since(start)
			t.Logf("%d bytes in, %d bytes allocated (%.1fx), %v, err=%v", len(b), got, float64(got)/float64(len(b)), elapsed, err)
			if got > allocBudget(len(b)) {
				t.Errorf("allocated %d bytes for %d bytes of input, budget %d", got, len(b), allocBudget(len(b)))
			}
			if elapsed > 2*time.Second {
				t.Errorf("took %v", elapsed)
			}
			checkInvariants(t, b, as, err)
		})
	}
}

// A typical one-line message costs a few allocations, not a fixed block.
func TestDecodeSmallAllocs(t *testing.T) {
	b := EncodeText("On my way 🚲")
	n := testing.AllocsPerRun(100, func() {
		if _, err := Decode(b); err != nil {
			t.Fatal(err)
		}
	})
	bytes := allocated(func() { _, _ = Decode(b) })
	t.Logf("%d bytes in: %.0f allocations, %d bytes", len(b), n, bytes)
	if n > 80 || bytes > 64*uint64(len(b)) {
		t.Errorf("%.0f allocations, %d bytes for %d bytes of input", n, bytes, len(b))
	}
}
