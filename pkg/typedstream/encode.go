package typedstream

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// EncodeText returns the typedstream archive of an NSMutableAttributedString
// holding text with a single run that marks the whole text as message part 0,
// which is what Messages writes for a plain one-part text message. It exists
// so that tests and the simulated Messages can fill message.attributedBody
// without building an AttributedString.
//
// Invalid UTF-8 in text is replaced by U+FFFD first (an NSString cannot hold
// it). An empty text gives an archive with an empty string and no runs, which
// Decode reports as ErrNoText, as it does for Messages' own blank bodies.
// EncodeText returns nil only for a text longer than 2 GiB, which the format
// cannot hold.
func EncodeText(text string) []byte {
	text = strings.ToValidUTF8(text, "\uFFFD")
	as := AttributedString{Text: text}
	if text != "" {
		zero := 0
		as.Runs = []Run{{Start: 0, Length: utf16Len(text), Part: &zero}}
	}
	b, err := Encode(as)
	if err != nil {
		return nil
	}
	return b
}

// Encode returns the typedstream archive of an NSMutableAttributedString
// with as.Text and as.Runs, laid out the way Messages lays out attributedBody
// (class names and versions, shared strings, back-references and attribute
// dictionary ids), so that Decode and Messages itself can read it.
//
// Runs are placed by Start and Length (UTF-16 code units); ByteStart and
// ByteLength are ignored. Runs must be in order, must not overlap, must have
// a positive Length, must lie within the text and must not split a
// surrogate pair. Parts of the text not covered by a run get a run with an
// empty attribute dictionary, as Messages does. Runs with the same attributes
// share one dictionary. Part and TextEffect must fit an int32. Values in
// Other are written as NSString objects; Other must not hold the keys of
// AttachmentGUID, Mention or Link, nor another modelled key whose field is
// set.
//
// Decode(Encode(x)) returns x (with byte offsets filled in, see
// SetByteOffsets) for any valid non-empty x whose runs all carry some
// attribute and whose Other maps stay within the MaxOther* bounds.
func Encode(as AttributedString) ([]byte, error) {
	text := as.Text
	if !utf8.ValidString(text) {
		return nil, errors.New("typedstream: encode: text is not valid UTF-8")
	}
	if len(text) > math.MaxInt32 {
		return nil, errors.New("typedstream: encode: text too long")
	}
	total := utf16Len(text)

	// Validate the runs and fill the gaps between them.
	type span struct {
		length int
		attrs  *Run // nil: empty dictionary
	}
	var spans []span
	cursor := 0
	for i := range as.Runs {
		r := &as.Runs[i]
		if r.Length <= 0 {
			return nil, fmt.Errorf("typedstream: encode: run %d has length %d", i, r.Length)
		}
		if r.Start < cursor {
			return nil, fmt.Errorf("typedstream: encode: run %d starts at %d, before the end of the previous run (%d)", i, r.Start, cursor)
		}
		if r.Start > total || r.Length > total-r.Start {
			return nil, fmt.Errorf("typedstream: encode: run %d (%d+%d) ends past the text (%d UTF-16 units)", i, r.Start, r.Length, total)
		}
		if err := checkRun(r); err != nil {
			return nil, fmt.Errorf("typedstream: encode: run %d: %w", i, err)
		}
		if r.Start > cursor {
			spans = append(spans, span{length: r.Start - cursor})
		}
		spans = append(spans, span{length: r.Length, attrs: r})
		cursor = r.Start + r.Length
	}
	if cursor < total {
		spans = append(spans, span{length: total - cursor})
	}
	if err := checkBoundaries(text, as.Runs); err != nil {
		return nil, err
	}

	w := newWriter()
	w.header()
	w.typ("@")
	w.beginObject(chainMutableAttributedString)
	w.typ("@")
	w.beginObject(chainMutableString)
	w.typ("+")
	w.uint(int64(len(text)))
	w.buf = append(w.buf, text...)
	w.end()

	ids := make(map[string]int64)
	for _, sp := range spans {
		key := attrKey(sp.attrs)
		id, seen := ids[key]
		if !seen {
			id = int64(len(ids) + 1)
			ids[key] = id
		}
		w.typ("iI")
		w.int(id)
		w.uint(int64(sp.length))
		if !seen {
			w.typ("@")
			w.dictionary(sp.attrs)
		}
	}
	w.end()
	return w.buf, nil
}

// checkRun validates the attribute values of a run.
func checkRun(r *Run) error {
	if r.Part != nil && (*r.Part < math.MinInt32 || *r.Part > math.MaxInt32) {
		return errors.New("part index does not fit an int32")
	}
	if r.TextEffect < math.MinInt32 || r.TextEffect > math.MaxInt32 {
		return errors.New("text effect does not fit an int32")
	}
	for k, v := range r.Other {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return errors.New("Other holds invalid UTF-8")
		}
		if k == "" {
			return errors.New("Other holds an empty key")
		}
		if len(k) > math.MaxInt32 || len(v) > math.MaxInt32 {
			return errors.New("Other value too long")
		}
		set := false
		switch k {
		case KeyFileTransferGUID, KeyMention, KeyLink:
			// Decode reads an NSString under these keys into the field,
			// so an Other entry would not come back where it was put.
			return fmt.Errorf("Other holds %s: use the Run field", k)
		case KeyMessagePart:
			set = r.Part != nil
		case KeyBold:
			set = r.Bold
		case KeyItalic:
			set = r.Italic
		case KeyUnderline:
			set = r.Underline
		case KeyStrikethrough:
			set = r.Strikethrough
		case KeyTextEffect:
			set = r.TextEffect != 0
		}
		if set {
			return fmt.Errorf("Other duplicates the modelled key %s", k)
		}
	}
	for _, s := range []string{r.AttachmentGUID, r.Mention, r.Link} {
		if !utf8.ValidString(s) {
			return errors.New("attribute is not valid UTF-8")
		}
	}
	return nil
}

// checkBoundaries rejects run boundaries that fall inside a surrogate pair.
func checkBoundaries(text string, runs []Run) error {
	w := utf16Walker{s: text}
	for i, r := range runs {
		for _, at := range []int{r.Start, r.Start + r.Length} {
			w.advance(at)
			if w.u != at {
				return fmt.Errorf("typedstream: encode: run %d boundary %d splits a surrogate pair", i, at)
			}
		}
	}
	return nil
}

// attrKey is a canonical description of a run's attributes, used to give
// runs with equal attributes the same dictionary id.
func attrKey(r *Run) string {
	if r == nil {
		return ""
	}
	var b strings.Builder
	if r.Part != nil {
		b.WriteString("p" + strconv.Itoa(*r.Part))
	}
	b.WriteString("|g" + strconv.Quote(r.AttachmentGUID))
	b.WriteString("|m" + strconv.Quote(r.Mention))
	b.WriteString("|l" + strconv.Quote(r.Link))
	b.WriteString("|s" + strconv.FormatBool(r.Bold) + strconv.FormatBool(r.Italic) +
		strconv.FormatBool(r.Underline) + strconv.FormatBool(r.Strikethrough))
	b.WriteString("|e" + strconv.Itoa(r.TextEffect))
	for _, k := range sortedKeys(r.Other) {
		b.WriteString("|o" + strconv.Quote(k) + "=" + strconv.Quote(r.Other[k]))
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// classDef is one class of a chain as Messages archives it.
type classDef struct {
	name    string
	version int64
}

// Class chains with the versions found in real attributedBody archives.
var (
	chainMutableAttributedString = []classDef{{"NSMutableAttributedString", 0}, {"NSAttributedString", 0}, {"NSObject", 0}}
	chainMutableString           = []classDef{{"NSMutableString", 1}, {"NSString", 1}, {"NSObject", 0}}
	chainString                  = []classDef{{"NSString", 1}, {"NSObject", 0}}
	chainDictionary              = []classDef{{"NSDictionary", 0}, {"NSObject", 0}}
	chainNumber                  = []classDef{{"NSNumber", 0}, {"NSValue", 0}, {"NSObject", 0}}
	chainURL                     = []classDef{{"NSURL", 0}, {"NSObject", 0}}
)

// writer produces typedstream bytes, tracking the shared-string and object
// tables so that repeated strings, classes and C strings become
// back-references as in Apple's archives.
type writer struct {
	buf     []byte
	shared  map[string]int
	nObjs   int
	classes map[string]int
	strs    map[string]int
	cstrs   map[string]int
}

func newWriter() *writer {
	return &writer{
		shared:  make(map[string]int),
		classes: make(map[string]int),
		strs:    make(map[string]int),
		cstrs:   make(map[string]int),
	}
}

func (w *writer) header() {
	w.buf = append(w.buf, 4, 11)
	w.buf = append(w.buf, "streamtyped"...)
	w.uint(1000)
}

// int writes a signed tagged integer; values must fit an int32.
func (w *writer) int(v int64) {
	switch {
	case v >= refBase && v <= math.MaxInt8:
		w.buf = append(w.buf, byte(int8(v)))
	case v >= math.MinInt16 && v <= math.MaxInt16:
		w.buf = append(w.buf, tagInt16, byte(v), byte(v>>8))
	default:
		w.buf = append(w.buf, tagInt32, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
}

// uint writes a non-negative tagged integer (lengths); values must fit an
// int32. Sizes past 32767 use the 4-byte form so that readers treating the
// value as signed agree.
func (w *writer) uint(v int64) { w.int(v) }

func (w *writer) ref(idx int) { w.int(int64(idx) + refBase) }

func (w *writer) sharedString(s string) {
	if idx, ok := w.shared[s]; ok {
		w.ref(idx)
		return
	}
	w.shared[s] = len(w.shared)
	w.buf = append(w.buf, tagNew)
	w.uint(int64(len(s)))
	w.buf = append(w.buf, s...)
}

func (w *writer) typ(s string) { w.sharedString(s) }

func (w *writer) classChain(chain []classDef) {
	for _, c := range chain {
		if idx, ok := w.classes[c.name]; ok {
			w.ref(idx)
			return
		}
		w.classes[c.name] = w.nObjs
		w.nObjs++
		w.buf = append(w.buf, tagNew)
		w.sharedString(c.name)
		w.int(c.version)
	}
	w.buf = append(w.buf, tagNil)
}

func (w *writer) beginObject(chain []classDef) {
	w.buf = append(w.buf, tagNew)
	w.nObjs++
	w.classChain(chain)
}

func (w *writer) end() { w.buf = append(w.buf, tagEnd) }

// stringObject writes an NSString, or a reference to an equal one already
// written.
func (w *writer) stringObject(s string) {
	if idx, ok := w.strs[s]; ok {
		w.ref(idx)
		return
	}
	w.strs[s] = w.nObjs
	w.beginObject(chainString)
	w.typ("+")
	w.uint(int64(len(s)))
	w.buf = append(w.buf, s...)
	w.end()
}

func (w *writer) cstring(s string) {
	if idx, ok := w.cstrs[s]; ok {
		w.ref(idx)
		return
	}
	w.cstrs[s] = w.nObjs
	w.nObjs++
	w.buf = append(w.buf, tagNew)
	w.sharedString(s)
}

// number writes an NSNumber holding an int, as Messages does for part
// indexes and flags.
func (w *writer) number(v int64) {
	w.beginObject(chainNumber)
	w.typ("*")
	w.cstring("i")
	w.typ("i")
	w.int(v)
	w.end()
}

func (w *writer) url(s string) {
	w.beginObject(chainURL)
	w.typ("c")
	w.buf = append(w.buf, 0) // no base URL
	w.typ("@")
	w.stringObject(s)
	w.end()
}

// dictionary writes the attribute dictionary of a run (empty for nil).
func (w *writer) dictionary(r *Run) {
	type pair struct {
		key string
		val func()
	}
	var pairs []pair
	if r != nil {
		if r.Part != nil {
			v := int64(*r.Part)
			pairs = append(pairs, pair{KeyMessagePart, func() { w.number(v) }})
		}
		if r.AttachmentGUID != "" {
			pairs = append(pairs, pair{KeyFileTransferGUID, func() { w.stringObject(r.AttachmentGUID) }})
		}
		if r.Mention != "" {
			pairs = append(pairs, pair{KeyMention, func() { w.stringObject(r.Mention) }})
		}
		if r.Link != "" {
			pairs = append(pairs, pair{KeyLink, func() { w.url(r.Link) }})
		}
		for _, f := range []struct {
			on  bool
			key string
		}{{r.Bold, KeyBold}, {r.Italic, KeyItalic}, {r.Underline, KeyUnderline}, {r.Strikethrough, KeyStrikethrough}} {
			if f.on {
				pairs = append(pairs, pair{f.key, func() { w.number(1) }})
			}
		}
		if r.TextEffect != 0 {
			v := int64(r.TextEffect)
			pairs = append(pairs, pair{KeyTextEffect, func() { w.number(v) }})
		}
		for _, k := range sortedKeys(r.Other) {
			v := r.Other[k]
			pairs = append(pairs, pair{k, func() { w.stringObject(v) }})
		}
	}
	w.beginObject(chainDictionary)
	w.typ("i")
	w.int(int64(len(pairs)))
	for _, p := range pairs {
		w.typ("@")
		w.stringObject(p.key)
		w.typ("@")
		p.val()
	}
	w.end()
}
