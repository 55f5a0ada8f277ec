// Package typedstream reads and writes the NeXTSTEP "typedstream" archives
// (NSArchiver format, not NSKeyedArchiver) that Apple's Messages keeps in
// chat.db column message.attributedBody, and turns them into plain Go values:
// the text of the message plus its attribute runs (message parts, attachment
// GUIDs, mentions, links, text styles and effects).
//
// # Why a hand-written decoder
//
// attributedBody is the only place where modern macOS stores the body of many
// messages (message.text is often NULL), and Apple ships no portable reader
// for it. The package is pure Go so that it cross-compiles to darwin/arm64
// with CGO disabled, and it treats every archive as untrusted input: it never
// panics, never allocates more than a small multiple of the input size, and
// runs in time roughly linear in the input.
//
// # The format in brief
//
// An archive starts with a header: the streamer version byte 4, the signature
// "streamtyped" (little-endian data; "typedstream" marks big-endian data)
// prefixed by its length 11, and the system version as an integer (1000 on
// every Mac, encoded 0x81 0xE8 0x03).
//
// Integers are written in one byte when they fit and do not collide with the
// tag bytes 0x80..0x91; otherwise tag 0x81 introduces an int16 and tag 0x82 an
// int32. Tag 0x83 introduces a raw float or double, 0x84 marks something new
// (a string, class or object written in full), 0x85 is nil and 0x86 ends an
// object. Anything else where a string, class or object is expected is a
// back-reference: the integer minus -110 (so 0x92 is entry 0) indexes either
// the table of shared strings (type encodings, class names) or the table of
// objects (objects, classes and C strings), in order of first appearance.
//
// The body is a sequence of groups. Each group starts with an Objective-C
// type-encoding string ("@" for an object, "iI" for an int and an unsigned
// int, "+" for a length-prefixed byte string, "[582c]" for a byte array, ...)
// followed by one value per encoded type. An object is the "new" marker, its
// class chain (name, version, superclass ... ending in nil or a reference),
// then its own groups up to the end marker.
//
// An NSAttributedString (or NSMutableAttributedString) archives its NSString
// first; the NSString holds one "+" group with the UTF-8 text. Then come
// attribute runs, one "iI" group each: the int is a 1-based id of the
// attribute dictionary and the unsigned int is the run length in UTF-16 code
// units. The first time an id appears the NSDictionary follows as an "@"
// group; later runs with the same id reuse it. An NSDictionary holds an "i"
// count followed by key and value objects, one "@" group each.
//
// # What is decoded
//
// [Decode] returns the text and the runs, with the attribute keys Messages
// uses mapped to fields of [Run]; unknown keys land, bounded, in Run.Other.
// [Encode] and [EncodeText] write the same layout back, which tests and the
// simulated Messages use to produce attributedBody values that Decode (and
// Messages itself) can read.
package typedstream
