package typedstream

import (
	"encoding/binary"
	"math"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Tag bytes of the typedstream format (see the package documentation).
const (
	tagInt16 = 0x81
	tagInt32 = 0x82
	tagFloat = 0x83
	tagNew   = 0x84
	tagNil   = 0x85
	tagEnd   = 0x86
	// Bytes 0x80..0x91 are reserved for tags; a one-byte integer never
	// takes these values.
	firstTag = 0x80
	lastTag  = 0x91
	// refBase is the integer that encodes table index 0 (the signed value
	// of byte 0x92).
	refBase = -110
)

// Decoder limits. They are far above anything Messages writes and only exist
// so that hostile input cannot exhaust the stack, the heap or the CPU.
const (
	// maxDepth bounds the nesting of objects inside objects.
	maxDepth = 64
	// maxTypeLen bounds the length of one type-encoding string.
	maxTypeLen = 512
	// maxTypeDepth bounds struct and array nesting inside a type encoding.
	maxTypeDepth = 16
	// maxTable bounds each of the shared-string and object tables.
	maxTable = 1 << 20
	// maxResolveLen bounds the URLs resolved against a base URL.
	maxResolveLen = 8192
	// maxClassChain bounds how far a superclass chain is followed (chains
	// built from back-references may even be cyclic).
	maxClassChain = 64
)

// Decode parses an attributedBody typedstream archive and returns its text
// and attribute runs.
//
// It returns ErrNoText (test with errors.Is) for a well-formed archive that
// holds no text, and a *FormatError (errors.Is(err, ErrMalformed)) for
// malformed input. Data after the root object is ignored, as Messages
// sometimes leaves some there.
//
// When the archive is damaged after its text was read completely, Decode
// returns both the *FormatError and a partial result whose Text is complete
// and whose Runs stop at the damage, so that a caller that only wants the
// text can still show it. Callers that want all or nothing just check err.
//
// Decode never panics, allocates at most a small constant multiple of
// len(b) (no length field is trusted beyond the data that remains) and runs
// in time linear in len(b).
func Decode(b []byte) (*AttributedString, error) {
	d := &decoder{b: b}
	as, err := d.run()
	if err != nil {
		if as != nil {
			return as, err
		}
		return nil, err
	}
	return as, nil
}

// objKind says how the decoder interprets an object's contents.
type objKind uint8

const (
	kindOther objKind = iota
	kindString
	kindAttributed
	kindNumber
	kindURL
	kindDict
	kindData
	kindCString
)

// class is one entry of a class chain.
type class struct {
	name    string
	version int64
	super   *class
}

// object is a decoded object, or a C string (which shares the object table).
// Only the fields its kind needs are set; nested NSAttributedString results
// live in decoder.attrs to keep this struct small.
type object struct {
	cls     *class
	kind    objKind
	done    bool   // contents read up to the end marker
	isFloat bool   // kindNumber: n holds IEEE-754 bits
	n       int64  // kindNumber: value; kindData: length
	s       string // kindString, kindURL, kindCString: the text
	kids    []*object
}

func (o *object) float() float64 { return math.Float64frombits(uint64(o.n)) }

// entry is one slot of the object table.
type entry struct {
	obj *object
	cls *class
}

// Item kinds seen in an object's contents.
const (
	itemInt uint8 = iota
	itemFloat
	itemBytes
	itemObject
	itemOther
)

// item is one value read from an object's contents.
type item struct {
	kind uint8
	n    int64  // itemInt: value; itemFloat: IEEE-754 bits; itemBytes: length
	s    string // itemBytes, only where the object's class needs the text
	obj  *object
}

// collector keeps, while an object's contents are read, just what the
// object's class needs, so that memory does not grow with values nobody
// reads. A nil collector discards everything. The decoder keeps one
// collector per nesting depth and reuses its buffer.
type collector struct {
	kind objKind // kindOther keeps only the group summary

	// Summary of the current group: its value count, its first two values
	// and its first object.
	gCount  int
	gFirst  [2]item
	gObj    *object
	gHasObj bool

	str     string // kindString: the first byte string
	haveStr bool
	num     item // kindNumber: the last number
	objs    []*object
	dataLen int64 // kindData
}

func (c *collector) reset(kind objKind) {
	objs := c.objs[:0]
	*c = collector{kind: kind, objs: objs}
}

func (c *collector) startGroup() {
	c.gCount, c.gObj, c.gHasObj = 0, nil, false
}

// wantsText reports whether the next byte string must be kept as text.
func (c *collector) wantsText() bool {
	return c != nil && c.kind == kindString && !c.haveStr
}

func (c *collector) add(it item) {
	if c == nil {
		return
	}
	if c.gCount < len(c.gFirst) {
		c.gFirst[c.gCount] = it
	}
	c.gCount++
	if it.kind == itemObject && !c.gHasObj {
		c.gObj, c.gHasObj = it.obj, true
	}
	switch c.kind {
	case kindString:
		if it.kind == itemBytes && !c.haveStr {
			c.str, c.haveStr = it.s, true
		}
	case kindNumber:
		if it.kind == itemInt || it.kind == itemFloat {
			c.num = it
		}
	case kindURL, kindDict:
		if it.kind == itemObject {
			c.objs = append(grow(c.objs), it.obj)
		}
	case kindData:
		if it.kind == itemBytes {
			c.dataLen += it.n
		}
	}
}

// attrBuilder accumulates an NSAttributedString group by group. Runs are
// clipped to the text as they arrive, so at most one is kept per UTF-16
// unit of text. Only the root's runs are resolved: a nested attributed
// string (an attribute value) is only ever shown as text, and resolving the
// runs of many nested strings that share one long NSString would cost time
// quadratic in the input.
type attrBuilder struct {
	root    bool
	str     *object
	haveStr bool
	total   int // UTF-16 length of the text
	cursor  int // UTF-16 offset reached by the runs so far
	lastID  int64
	haveID  bool
	runs    []pendingRun
	dicts   map[int64]*object
}

// tnode is a compiled type encoding: a leaf type character, an array of
// count elements, or a struct.
type tnode struct {
	kind   byte // leaf character, '[' or '{'
	count  int
	elem   *tnode
	fields []*tnode
}

type decoder struct {
	b           []byte
	off         int
	big         bool // "typedstream" signature: big-endian numbers
	shared      []string
	types       [][]*tnode // compiled type encodings, parallel to shared
	objs        []entry
	depth       int
	recovered   bool
	rootObj     *object
	rootBuilder *attrBuilder
	tmpl        map[*object]*Run
	attrs       map[*object]*AttributedString
	cols        []*collector // one per nesting depth, reused
}

// collector returns the reusable collector of nesting depth depth.
func (d *decoder) collector(depth int, kind objKind) *collector {
	for len(d.cols) <= depth {
		d.cols = append(d.cols, &collector{})
	}
	c := d.cols[depth]
	c.reset(kind)
	return c
}

func (d *decoder) errf(reason string) *FormatError {
	return &FormatError{Offset: d.off, Reason: reason}
}

func (d *decoder) run() (*AttributedString, error) {
	if err := d.header(); err != nil {
		return nil, err
	}
	// The root is the first object of the top-level groups.
	top := d.collector(0, kindOther)
	var root *object
	for d.off < len(d.b) {
		h, err := d.byte()
		if err != nil {
			return nil, err
		}
		if err := d.group(h, top); err != nil {
			return d.partial(), err
		}
		if top.gHasObj {
			root = top.gObj
			break
		}
	}
	if root == nil {
		return nil, ErrNoText
	}
	switch root.kind {
	case kindAttributed:
		as := d.attrs[root]
		if as == nil || as.Text == "" {
			return nil, ErrNoText
		}
		as.Recovered = d.recovered
		return as, nil
	case kindString:
		if root.s == "" {
			return nil, ErrNoText
		}
		return &AttributedString{Text: root.s, Runs: []Run{}, Recovered: d.recovered}, nil
	}
	return nil, ErrNoText
}

// partial builds the result returned alongside an error: the root
// attributed string as far as it was read, provided its text is complete.
func (d *decoder) partial() *AttributedString {
	if d.rootBuilder == nil {
		return nil
	}
	as := d.finishAttributed(d.rootBuilder)
	if as.Text == "" {
		return nil
	}
	as.Recovered = d.recovered
	return as
}

func (d *decoder) header() error {
	if len(d.b) < 13 {
		return d.errf("too short for a typedstream header")
	}
	if d.b[0] != 4 {
		return d.errf("unsupported streamer version " + strconv.Itoa(int(d.b[0])))
	}
	if d.b[1] != 11 {
		return d.errf("bad signature length")
	}
	switch string(d.b[2:13]) {
	case "streamtyped":
	case "typedstream":
		d.big = true
	default:
		return d.errf("bad signature")
	}
	d.off = 13
	h, err := d.byte()
	if err != nil {
		return err
	}
	_, err = d.integer(h, false) // system version, 1000 on every Mac
	return err
}

func (d *decoder) byte() (byte, error) {
	if d.off >= len(d.b) {
		return 0, d.errf("unexpected end of data")
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

func (d *decoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.b)-d.off {
		return nil, d.errf("value runs past the end of the data")
	}
	p := d.b[d.off : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) u16(p []byte) uint16 {
	if d.big {
		return binary.BigEndian.Uint16(p)
	}
	return binary.LittleEndian.Uint16(p)
}

func (d *decoder) u32(p []byte) uint32 {
	if d.big {
		return binary.BigEndian.Uint32(p)
	}
	return binary.LittleEndian.Uint32(p)
}

func (d *decoder) u64(p []byte) uint64 {
	if d.big {
		return binary.BigEndian.Uint64(p)
	}
	return binary.LittleEndian.Uint64(p)
}

// integer reads a tagged integer whose head byte is h.
func (d *decoder) integer(h byte, signed bool) (int64, error) {
	switch h {
	case tagInt16:
		p, err := d.take(2)
		if err != nil {
			return 0, err
		}
		if signed {
			return int64(int16(d.u16(p))), nil
		}
		return int64(d.u16(p)), nil
	case tagInt32:
		p, err := d.take(4)
		if err != nil {
			return 0, err
		}
		if signed {
			return int64(int32(d.u32(p))), nil
		}
		return int64(d.u32(p)), nil
	}
	if h >= firstTag && h <= lastTag {
		d.off--
		return 0, d.errf("unexpected tag 0x" + strconv.FormatUint(uint64(h), 16) + " where an integer was expected")
	}
	if signed {
		return int64(int8(h)), nil
	}
	return int64(h), nil
}

// ref reads a back-reference whose head byte is h and returns the table
// index, checked against the table length n.
func (d *decoder) ref(h byte, n int) (int, error) {
	v, err := d.integer(h, true)
	if err != nil {
		return 0, err
	}
	idx := v - refBase
	if idx < 0 || idx >= int64(n) {
		return 0, d.errf("reference to table entry " + strconv.FormatInt(idx, 10) + " that does not exist")
	}
	return int(idx), nil
}

// unshared reads a length-prefixed byte string whose head byte is h.
func (d *decoder) unshared(h byte) (p []byte, isNil bool, err error) {
	if h == tagNil {
		return nil, true, nil
	}
	n, err := d.integer(h, false)
	if err != nil {
		return nil, false, err
	}
	if n > int64(len(d.b)-d.off) {
		return nil, false, d.errf("string length " + strconv.FormatInt(n, 10) + " exceeds the remaining data")
	}
	p, err = d.take(int(n))
	return p, false, err
}

// plus reads the "+" string of an NSString. If its length field overruns
// the data, it recovers (once per archive) the text up to the next
// end-of-object marker, a damage pattern found in real chat.db rows.
func (d *decoder) plus(h byte) (p []byte, isNil bool, err error) {
	start := d.off
	p, isNil, err = d.unshared(h)
	if err == nil || d.recovered || h == tagNil {
		return p, isNil, err
	}
	// Re-read the length to learn whether the failure was an overrun.
	d.off = start
	n, ierr := d.integer(h, false)
	if ierr != nil || n <= int64(len(d.b)-d.off) {
		return nil, false, err
	}
	i := d.off
	for i < len(d.b) {
		if d.b[i] == tagEnd {
			break
		}
		r, size := utf8.DecodeRune(d.b[i:])
		if r == utf8.RuneError && size == 1 {
			return nil, false, err
		}
		i += size
	}
	if i >= len(d.b) {
		return nil, false, err
	}
	p = d.b[d.off:i]
	d.off = i
	d.recovered = true
	return p, false, nil
}

// sharedString reads a shared string whose head byte is h and returns it
// with its table index.
func (d *decoder) sharedString(h byte) (s string, idx int, isNil bool, err error) {
	switch h {
	case tagNil:
		return "", -1, true, nil
	case tagNew:
		h2, err := d.byte()
		if err != nil {
			return "", 0, false, err
		}
		p, pNil, err := d.unshared(h2)
		if err != nil {
			return "", 0, false, err
		}
		if pNil {
			return "", 0, false, d.errf("nil shared string")
		}
		if len(d.shared) >= maxTable {
			return "", 0, false, d.errf("too many shared strings")
		}
		d.shared = append(grow(d.shared), string(p))
		d.types = append(grow(d.types), nil)
		return d.shared[len(d.shared)-1], len(d.shared) - 1, false, nil
	}
	idx, err = d.ref(h, len(d.shared))
	if err != nil {
		return "", 0, false, err
	}
	return d.shared[idx], idx, false, nil
}

// grow makes room for one more element, doubling the capacity when full.
// append alone grows large slices by a quarter at a time, which allocates
// about five times the final size in total; doubling keeps it near two.
func grow[T any](s []T) []T {
	if len(s) < cap(s) {
		return s
	}
	n := make([]T, len(s), 2*cap(s)+8)
	copy(n, s)
	return n
}

func (d *decoder) addEntry(e entry) error {
	if len(d.objs) >= maxTable {
		return d.errf("too many objects")
	}
	d.objs = append(grow(d.objs), e)
	return nil
}

// class reads a class chain whose head byte is h.
func (d *decoder) class(h byte) (*class, error) {
	var first, last *class
	for h == tagNew {
		c := &class{}
		if err := d.addEntry(entry{cls: c}); err != nil {
			return nil, err
		}
		h2, err := d.byte()
		if err != nil {
			return nil, err
		}
		name, _, isNil, err := d.sharedString(h2)
		if err != nil {
			return nil, err
		}
		if isNil {
			return nil, d.errf("nil class name")
		}
		c.name = name
		h3, err := d.byte()
		if err != nil {
			return nil, err
		}
		if c.version, err = d.integer(h3, true); err != nil {
			return nil, err
		}
		if last != nil {
			last.super = c
		} else {
			first = c
		}
		last = c
		if h, err = d.byte(); err != nil {
			return nil, err
		}
	}
	var tail *class
	if h != tagNil {
		idx, err := d.ref(h, len(d.objs))
		if err != nil {
			return nil, err
		}
		if tail = d.objs[idx].cls; tail == nil {
			return nil, d.errf("class reference to an entry that is not a class")
		}
	}
	if last == nil {
		return tail, nil
	}
	last.super = tail
	return first, nil
}

// classify maps a class chain to the interpretation the decoder applies.
func classify(c *class) objKind {
	for i := 0; c != nil && i < maxClassChain; i, c = i+1, c.super {
		switch c.name {
		case "NSAttributedString":
			return kindAttributed
		case "NSString":
			return kindString
		case "NSNumber":
			return kindNumber
		case "NSURL":
			return kindURL
		case "NSDictionary":
			return kindDict
		case "NSData":
			return kindData
		}
	}
	return kindOther
}

// object reads an object whose head byte is h.
func (d *decoder) object(h byte) (*object, error) {
	switch h {
	case tagNil:
		return nil, nil
	case tagNew:
	default:
		idx, err := d.ref(h, len(d.objs))
		if err != nil {
			return nil, err
		}
		o := d.objs[idx].obj
		if o == nil || o.kind == kindCString {
			return nil, d.errf("object reference to an entry that is not an object")
		}
		return o, nil
	}
	if d.depth >= maxDepth {
		return nil, d.errf("objects nested too deeply")
	}
	d.depth++
	defer func() { d.depth-- }()

	o := &object{}
	if err := d.addEntry(entry{obj: o}); err != nil {
		return nil, err
	}
	h2, err := d.byte()
	if err != nil {
		return nil, err
	}
	if o.cls, err = d.class(h2); err != nil {
		return nil, err
	}
	if o.cls == nil {
		return nil, d.errf("object without a class")
	}
	o.kind = classify(o.cls)
	var col *collector
	var ab *attrBuilder
	if o.kind != kindOther {
		col = d.collector(d.depth, o.kind)
		if o.kind == kindAttributed {
			ab = &attrBuilder{root: d.rootObj == nil}
		}
	}
	if d.rootObj == nil {
		d.rootObj, d.rootBuilder = o, ab
	}
	for {
		h3, err := d.byte()
		if err != nil {
			return nil, err
		}
		if h3 == tagEnd {
			break
		}
		if err := d.group(h3, col); err != nil {
			return nil, err
		}
		if ab != nil {
			d.absorb(ab, col)
		}
	}
	if ab != nil {
		if d.attrs == nil {
			d.attrs = make(map[*object]*AttributedString)
		}
		d.attrs[o] = d.finishAttributed(ab)
	} else {
		d.interpret(o, col)
	}
	o.done = true
	return o, nil
}

// compiled returns the compiled form of shared string idx as a list of
// type encodings, compiling it once.
func (d *decoder) compiled(idx int, s string) ([]*tnode, error) {
	if t := d.types[idx]; t != nil {
		return t, nil
	}
	if len(s) == 0 || len(s) > maxTypeLen {
		return nil, d.errf("bad type encoding length")
	}
	var nodes []*tnode
	p := 0
	for p < len(s) {
		n, np, err := compileOne(s, p, 0)
		if err != nil {
			return nil, d.errf("type encoding " + strconv.Quote(s) + ": " + err.Error())
		}
		nodes = append(nodes, n)
		p = np
	}
	d.types[idx] = nodes
	return nodes, nil
}

// leaves holds one shared node per simple type character, so compiling
// "iiii..." allocates no node per character.
var leaves = func() (l [256]*tnode) {
	for _, c := range []byte("cCBsSiIlLqQfd*%:+#@") {
		l[c] = &tnode{kind: c}
	}
	return l
}()

type typeError string

func (e typeError) Error() string { return string(e) }

// compileOne compiles the single type encoding starting at s[p]. Every type
// it accepts consumes at least one byte of archive data, which keeps decoding
// linear in the input.
func compileOne(s string, p, depth int) (*tnode, int, error) {
	if depth > maxTypeDepth {
		return nil, 0, typeError("nested too deeply")
	}
	if p >= len(s) {
		return nil, 0, typeError("truncated")
	}
	switch c := s[p]; c {
	case 'c', 'C', 'B', 's', 'S', 'i', 'I', 'l', 'L', 'q', 'Q', 'f', 'd', '*', '%', ':', '+', '#', '@':
		return leaves[c], p + 1, nil
	case '[':
		p++
		start := p
		count := 0
		for p < len(s) && s[p] >= '0' && s[p] <= '9' {
			count = count*10 + int(s[p]-'0')
			if count > math.MaxInt32 {
				return nil, 0, typeError("array too long")
			}
			p++
		}
		if p == start || count == 0 {
			return nil, 0, typeError("array without a positive length")
		}
		elem, np, err := compileOne(s, p, depth+1)
		if err != nil {
			return nil, 0, err
		}
		if np >= len(s) || s[np] != ']' {
			return nil, 0, typeError("unterminated array")
		}
		return &tnode{kind: '[', count: count, elem: elem}, np + 1, nil
	case '{':
		p++
		// Skip an optional "name=" prefix.
		if eq := strings.IndexByte(s[p:], '='); eq >= 0 && !strings.ContainsAny(s[p:p+eq], "{}[]") {
			p += eq + 1
		}
		n := &tnode{kind: '{'}
		for {
			if p >= len(s) {
				return nil, 0, typeError("unterminated struct")
			}
			if s[p] == '}' {
				break
			}
			f, np, err := compileOne(s, p, depth+1)
			if err != nil {
				return nil, 0, err
			}
			n.fields = append(n.fields, f)
			p = np
		}
		if len(n.fields) == 0 {
			return nil, 0, typeError("empty struct")
		}
		return n, p + 1, nil
	default:
		return nil, 0, typeError("unsupported type " + strconv.QuoteRune(rune(c)))
	}
}

// group reads one group of typed values whose head byte is h.
func (d *decoder) group(h byte, col *collector) error {
	s, idx, isNil, err := d.sharedString(h)
	if err != nil {
		return err
	}
	if isNil {
		return d.errf("nil type encoding")
	}
	nodes, err := d.compiled(idx, s)
	if err != nil {
		return err
	}
	if col != nil {
		col.startGroup()
	}
	for _, n := range nodes {
		if err := d.value(n, col); err != nil {
			return err
		}
	}
	return nil
}

// value reads one value of type t.
func (d *decoder) value(t *tnode, col *collector) error {
	switch t.kind {
	case 'c', 'C', 'B':
		c, err := d.byte()
		if err != nil {
			return err
		}
		v := int64(c)
		if t.kind == 'c' {
			v = int64(int8(c))
		}
		col.add(item{kind: itemInt, n: v})
		return nil
	case '[':
		if t.count > len(d.b)-d.off {
			return d.errf("array longer than the remaining data")
		}
		if t.elem.kind == 'c' || t.elem.kind == 'C' {
			p, err := d.take(t.count)
			if err != nil {
				return err
			}
			col.add(item{kind: itemBytes, n: int64(len(p))})
			return nil
		}
		for i := 0; i < t.count; i++ {
			if err := d.value(t.elem, col); err != nil {
				return err
			}
		}
		return nil
	case '{':
		for _, f := range t.fields {
			if err := d.value(f, col); err != nil {
				return err
			}
		}
		return nil
	}
	h, err := d.byte()
	if err != nil {
		return err
	}
	switch t.kind {
	case 's', 'i', 'l', 'q', 'S', 'I', 'L', 'Q':
		signed := t.kind == 's' || t.kind == 'i' || t.kind == 'l' || t.kind == 'q'
		v, err := d.integer(h, signed)
		if err != nil {
			return err
		}
		col.add(item{kind: itemInt, n: v})
	case 'f', 'd':
		var f float64
		if h == tagFloat {
			if t.kind == 'f' {
				p, err := d.take(4)
				if err != nil {
					return err
				}
				f = float64(math.Float32frombits(d.u32(p)))
			} else {
				p, err := d.take(8)
				if err != nil {
					return err
				}
				f = math.Float64frombits(d.u64(p))
			}
		} else {
			v, err := d.integer(h, true)
			if err != nil {
				return err
			}
			f = float64(v)
		}
		col.add(item{kind: itemFloat, n: int64(math.Float64bits(f))})
	case '*':
		o, err := d.cstring(h)
		if err != nil {
			return err
		}
		if o != nil {
			col.add(item{kind: itemBytes, n: int64(len(o.s)), s: o.s})
		} else {
			col.add(item{kind: itemOther})
		}
	case '%', ':':
		s, _, _, err := d.sharedString(h)
		if err != nil {
			return err
		}
		col.add(item{kind: itemBytes, n: int64(len(s)), s: s})
	case '+':
		p, isNil, err := d.plus(h)
		if err != nil {
			return err
		}
		switch {
		case isNil:
			col.add(item{kind: itemOther})
		case col.wantsText():
			col.add(item{kind: itemBytes, n: int64(len(p)), s: string(p)})
		default:
			col.add(item{kind: itemBytes, n: int64(len(p))})
		}
	case '#':
		if _, err := d.class(h); err != nil {
			return err
		}
		col.add(item{kind: itemOther})
	case '@':
		o, err := d.object(h)
		if err != nil {
			return err
		}
		col.add(item{kind: itemObject, obj: o})
	default:
		return d.errf("unsupported type")
	}
	return nil
}

// cstring reads a C string whose head byte is h; literal C strings join the
// object table.
func (d *decoder) cstring(h byte) (*object, error) {
	switch h {
	case tagNil:
		return nil, nil
	case tagNew:
		o := &object{kind: kindCString, done: true}
		if err := d.addEntry(entry{obj: o}); err != nil {
			return nil, err
		}
		h2, err := d.byte()
		if err != nil {
			return nil, err
		}
		s, _, isNil, err := d.sharedString(h2)
		if err != nil {
			return nil, err
		}
		if isNil {
			return nil, d.errf("nil C string contents")
		}
		o.s = s
		return o, nil
	}
	idx, err := d.ref(h, len(d.objs))
	if err != nil {
		return nil, err
	}
	o := d.objs[idx].obj
	if o == nil || o.kind != kindCString {
		return nil, d.errf("C string reference to an entry that is not a C string")
	}
	return o, nil
}

// interpret fills the kind-specific fields of o from what col kept.
func (d *decoder) interpret(o *object, col *collector) {
	if col == nil {
		return
	}
	switch o.kind {
	case kindString:
		if col.haveStr {
			o.s = strings.ToValidUTF8(col.str, "\uFFFD")
		}
	case kindNumber:
		// Contents: the C string of the value's type, then the value.
		o.n, o.isFloat = col.num.n, col.num.kind == itemFloat
	case kindURL:
		// Contents: a "has base URL" flag, the base NSURL if the flag is set,
		// then the relative string.
		var base, rel *object
		for _, k := range col.objs {
			if k == nil {
				continue
			}
			switch k.kind {
			case kindURL:
				if base == nil {
					base = k
				}
			case kindString:
				rel = k
			}
		}
		if rel != nil {
			o.s = rel.s
			// Resolution parses both strings; it is skipped for long ones,
			// which many URL objects could otherwise share to cost
			// quadratic time.
			if base != nil && base.s != "" && len(base.s)+len(rel.s) <= maxResolveLen {
				if bu, err := url.Parse(base.s); err == nil {
					if ru, err := url.Parse(rel.s); err == nil {
						o.s = bu.ResolveReference(ru).String()
					}
				}
			}
		}
	case kindDict:
		// Contents: the count, then key and value objects alternately.
		o.kids = append([]*object(nil), col.objs...)
	case kindData:
		o.n = col.dataLen
	}
}

// pendingRun is an "iI" group of an attributed string after clipping: the
// dictionary id and the run's extent in UTF-16 code units.
type pendingRun struct {
	id         int64
	start, end int
}

// absorb takes in one group of an NSAttributedString: first the NSString,
// then "iI" runs, each new one followed by its dictionary.
func (d *decoder) absorb(ab *attrBuilder, c *collector) {
	if !ab.haveStr {
		if c.gHasObj {
			ab.str, ab.haveStr = c.gObj, true
			if str := ab.str; ab.root && str != nil && str.kind == kindString && str.done {
				ab.total = utf16Len(str.s)
				// Each run group takes at least three bytes and each kept run
				// at least one UTF-16 unit, which bounds the runs to come.
				n := (len(d.b) - d.off) / 3
				if ab.total < n {
					n = ab.total
				}
				ab.runs = make([]pendingRun, 0, n)
			}
		}
		return
	}
	if !ab.root {
		return
	}
	switch {
	case c.gCount == 2 && c.gFirst[0].kind == itemInt && c.gFirst[1].kind == itemInt:
		id, length := c.gFirst[0].n, c.gFirst[1].n
		ab.lastID, ab.haveID = id, true
		if length <= 0 || ab.cursor >= ab.total {
			return
		}
		start, end := ab.cursor, ab.total
		if length < int64(end-start) {
			end = start + int(length)
		}
		ab.cursor = end
		ab.runs = append(ab.runs, pendingRun{id: id, start: start, end: end})
	case c.gCount == 1 && c.gHasObj && ab.haveID:
		if o := c.gObj; o != nil && o.kind == kindDict {
			if ab.dicts == nil {
				ab.dicts = make(map[int64]*object)
			}
			ab.dicts[ab.lastID] = o
		}
	}
}

// finishAttributed resolves the runs gathered by ab into an
// AttributedString, leaving out runs without attributes. It is also used on
// the builder of a damaged root.
func (d *decoder) finishAttributed(ab *attrBuilder) *AttributedString {
	as := &AttributedString{Runs: []Run{}}
	str := ab.str
	if str == nil || str.kind != kindString || !str.done {
		return as
	}
	as.Text = str.s
	n := 0
	for _, pr := range ab.runs {
		if d.template(ab.dicts[pr.id]) != nil {
			n++
		}
	}
	as.Runs = make([]Run, 0, n)
	w := utf16Walker{s: as.Text}
	for _, pr := range ab.runs {
		t := d.template(ab.dicts[pr.id])
		if t == nil {
			continue
		}
		r := *t
		r.Start, r.Length = pr.start, pr.end-pr.start
		bs := w.advance(pr.start)
		be := w.advance(pr.end)
		r.ByteStart, r.ByteLength = bs, be-bs
		as.Runs = append(as.Runs, r)
	}
	return as
}

// template returns the attributes of a dictionary as a Run without offsets,
// computed once per dictionary object; nil when it has no attributes.
func (d *decoder) template(dict *object) *Run {
	if dict == nil || !dict.done {
		return nil
	}
	if t, ok := d.tmpl[dict]; ok {
		return t
	}
	t := &Run{}
	kids := dict.kids
	for k := 0; k+1 < len(kids); k += 2 {
		key, val := kids[k], kids[k+1]
		if key == nil || key.kind != kindString || val == nil {
			continue
		}
		if !setKnown(t, key.s, val) {
			addOther(t, key.s, d.render(val))
		}
	}
	if !t.hasAttributes() {
		t = nil
	}
	if d.tmpl == nil {
		d.tmpl = make(map[*object]*Run)
	}
	d.tmpl[dict] = t
	return t
}

// setKnown stores a modelled attribute; it returns false when key is not
// modelled or val has an unexpected type.
func setKnown(t *Run, key string, val *object) bool {
	switch key {
	case KeyMessagePart:
		if n, ok := intValue(val); ok {
			t.Part = &n
			return true
		}
	case KeyFileTransferGUID:
		if val.kind == kindString {
			t.AttachmentGUID = val.s
			return true
		}
	case KeyMention:
		if val.kind == kindString {
			t.Mention = val.s
			return true
		}
	case KeyLink:
		if val.kind == kindURL || val.kind == kindString {
			t.Link = val.s
			return true
		}
	case KeyBold, KeyItalic, KeyUnderline, KeyStrikethrough:
		if val.kind != kindNumber {
			return false
		}
		on := val.n != 0
		if val.isFloat {
			on = val.float() != 0
		}
		switch key {
		case KeyBold:
			t.Bold = on
		case KeyItalic:
			t.Italic = on
		case KeyUnderline:
			t.Underline = on
		default:
			t.Strikethrough = on
		}
		return true
	case KeyTextEffect:
		if n, ok := intValue(val); ok {
			t.TextEffect = n
			return true
		}
	}
	return false
}

// intValue returns the integer value of an NSNumber that fits an int32.
func intValue(o *object) (int, bool) {
	if o.kind != kindNumber {
		return 0, false
	}
	v := o.n
	if o.isFloat {
		f := o.float()
		if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, false
		}
		if f < math.MinInt32 || f > math.MaxInt32 {
			return 0, false
		}
		v = int64(f)
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		return 0, false
	}
	return int(v), true
}

// render describes an attribute value for Run.Other.
func (d *decoder) render(o *object) string {
	switch o.kind {
	case kindString, kindURL:
		return o.s
	case kindNumber:
		if o.isFloat {
			return strconv.FormatFloat(o.float(), 'g', -1, 64)
		}
		return strconv.FormatInt(o.n, 10)
	case kindData:
		return "<" + o.cls.name + " " + strconv.FormatInt(o.n, 10) + " bytes>"
	case kindAttributed:
		if as := d.attrs[o]; as != nil {
			return as.Text
		}
	}
	if o.cls != nil {
		return "<" + o.cls.name + ">"
	}
	return "<object>"
}

// addOther stores an unmodelled attribute, within the Run.Other bounds.
func addOther(t *Run, key, val string) {
	if t.Other == nil {
		t.Other = make(map[string]string)
	}
	if len(t.Other) >= MaxOtherKeys {
		return
	}
	t.Other[clip(key, MaxOtherKeyLen)] = clip(val, MaxOtherValueLen)
}

// clip cuts s to at most max bytes at a rune boundary, marking the cut.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const ell = "…"
	cut := max - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}
