package editinfo

import (
	"encoding/binary"
)

// maxPlistDepth bounds container nesting; message_summary_info is four
// levels deep.
const maxPlistDepth = 32

// checkTree validates the skeleton of a binary property list before it is
// handed to the plist decoder: the header and trailer must be sound and
// every array, set and dictionary must be reachable only once and no deeper
// than maxPlistDepth, and the containers' reference lists must not overlap.
// Apple's writer never shares containers, and the decoder would copy a
// shared container once per reference, so a few hundred bytes of shared
// references could otherwise expand into gigabytes. The walk visits each
// container once and at most len(b) references, so it is linear.
func checkTree(b []byte) error {
	const trailerLen = 32
	if len(b) < 8+trailerLen || string(b[:6]) != "bplist" {
		return malformed("not a binary property list")
	}
	tr := b[len(b)-trailerLen:]
	offSize := int(tr[6])
	refSize := int(tr[7])
	numObjs := binary.BigEndian.Uint64(tr[8:])
	top := binary.BigEndian.Uint64(tr[16:])
	tableOff := binary.BigEndian.Uint64(tr[24:])
	bodyEnd := uint64(len(b) - trailerLen)
	if offSize < 1 || offSize > 8 || refSize < 1 || refSize > 8 {
		return malformed("bad integer sizes in the trailer")
	}
	if tableOff < 8 || tableOff > bodyEnd || numObjs == 0 || numObjs > (bodyEnd-tableOff)/uint64(offSize) || top >= numObjs {
		return malformed("bad object table in the trailer")
	}
	readUint := func(at uint64, size int) (uint64, bool) {
		if at > bodyEnd || uint64(size) > bodyEnd-at {
			return 0, false
		}
		var v uint64
		for _, c := range b[at : at+uint64(size)] {
			v = v<<8 | uint64(c)
		}
		return v, true
	}
	offsetOf := func(obj uint64) (uint64, bool) {
		off, ok := readUint(tableOff+obj*uint64(offSize), offSize)
		if !ok || off < 8 || off >= tableOff {
			return 0, false
		}
		return off, true
	}
	// count reads the element count of the object at off and returns it
	// with the offset of the first element.
	count := func(off uint64) (uint64, uint64, bool) {
		n := uint64(b[off] & 0x0f)
		if n != 0x0f {
			return n, off + 1, true
		}
		if off+1 >= tableOff || b[off+1]&0xf0 != 0x10 {
			return 0, 0, false
		}
		size := 1 << (b[off+1] & 0x0f)
		if size > 8 {
			return 0, 0, false
		}
		v, ok := readUint(off+2, size)
		return v, off + 2 + uint64(size), ok
	}

	visited := make([]bool, numObjs)
	var totalRefs uint64
	type frame struct {
		obj   uint64
		depth int
	}
	stack := []frame{{top, 1}}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		off, ok := offsetOf(f.obj)
		if !ok {
			return malformed("object %d has a bad offset", f.obj)
		}
		kind := b[off] & 0xf0
		if kind != 0xa0 && kind != 0xc0 && kind != 0xd0 {
			continue // not a container
		}
		if visited[f.obj] {
			return malformed("container object %d is shared", f.obj)
		}
		visited[f.obj] = true
		if f.depth > maxPlistDepth {
			return malformed("containers nested too deeply")
		}
		n, first, ok := count(off)
		if !ok {
			return malformed("object %d has a bad count", f.obj)
		}
		refs := n
		if kind == 0xd0 {
			refs = 2 * n
		}
		if n > tableOff || first > tableOff || refs > (tableOff-first)/uint64(refSize) {
			return malformed("object %d runs past the object table", f.obj)
		}
		// Reference lists of distinct containers do not overlap in a
		// well-formed file, so together they fit in it.
		totalRefs += refs
		if totalRefs > tableOff/uint64(refSize) {
			return malformed("containers overlap")
		}
		for i := uint64(0); i < refs; i++ {
			ref, _ := readUint(first+i*uint64(refSize), refSize)
			if ref >= numObjs {
				return malformed("object %d refers to missing object %d", f.obj, ref)
			}
			stack = append(stack, frame{ref, f.depth + 1})
		}
	}
	return nil
}
