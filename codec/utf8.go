package codec

import "unicode/utf8"

// UTF8 validates a text message that arrives in pieces (fragments, or parts of
// one frame's payload as TCP delivers them) without holding the message.
//
// RFC 6455 section 8.1 asks an endpoint to fail the connection as soon as the
// bytes seen so far cannot begin valid UTF-8, not at the end of the message, so
// Write checks each piece against everything before it. The only state carried
// between pieces is a code point cut in two by a piece boundary: at most three
// bytes, so the validator costs four bytes per connection.
type UTF8 struct {
	pending [3]byte // the start of a code point the last piece ended inside
	n       uint8   // how many bytes of pending are in use
}

// Write reports whether the text seen so far, ending with p, is still a prefix
// of some valid UTF-8 string. Once it returns false the message is invalid and
// the validator must be Reset before reuse.
func (v *UTF8) Write(p []byte) bool {
	if v.n > 0 {
		var r [utf8.UTFMax]byte
		copy(r[:], v.pending[:v.n])
		want := sequenceLength(v.pending[0])
		got := copy(r[v.n:want], p)
		p = p[got:]
		have := int(v.n) + got
		if have < want {
			if !validPrefix(r[:have]) {
				return false
			}
			v.n = uint8(copy(v.pending[:], r[:have]))
			return true
		}
		if !utf8.Valid(r[:want]) {
			return false
		}
		v.n = 0
	}
	whole := completeLength(p)
	if !utf8.Valid(p[:whole]) {
		return false
	}
	if tail := p[whole:]; len(tail) > 0 {
		if !validPrefix(tail) {
			return false
		}
		v.n = uint8(copy(v.pending[:], tail))
	}
	return true
}

// Complete reports whether the text seen so far ends on a code point boundary,
// which a message must when its final fragment has arrived.
func (v *UTF8) Complete() bool { return v.n == 0 }

// Reset makes the validator ready for a new message.
func (v *UTF8) Reset() { *v = UTF8{} }

// completeLength returns the length of p without a final code point that p
// cuts short, so that the rest can be checked by utf8.Valid in one call.
func completeLength(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax+1; i-- {
		if b := p[i]; b < 0x80 || b >= 0xC0 { // not a continuation byte
			if n := sequenceLength(b); n > 0 && i+n > len(p) {
				return i
			}
			break
		}
	}
	return len(p)
}

// sequenceLength returns how many bytes a code point starting with lead takes,
// or 0 if no valid UTF-8 code point can start with it.
func sequenceLength(lead byte) int {
	switch {
	case lead < 0x80:
		return 1
	case lead < 0xC2: // continuation bytes, and 0xC0/0xC1 which only start overlong forms
		return 0
	case lead < 0xE0:
		return 2
	case lead < 0xF0:
		return 3
	case lead < 0xF5:
		return 4
	}
	return 0
}

// validPrefix reports whether b, shorter than the code point its first byte
// starts, can still be completed into a valid one. The second byte carries the
// tricky rules (no overlong forms, no surrogates, nothing past U+10FFFF); later
// bytes need only be continuation bytes.
func validPrefix(b []byte) bool {
	if sequenceLength(b[0]) <= len(b) {
		return false
	}
	if len(b) >= 2 {
		lo, hi := byte(0x80), byte(0xBF)
		switch b[0] {
		case 0xE0:
			lo = 0xA0
		case 0xED:
			hi = 0x9F
		case 0xF0:
			lo = 0x90
		case 0xF4:
			hi = 0x8F
		}
		if b[1] < lo || b[1] > hi {
			return false
		}
	}
	if len(b) >= 3 && (b[2] < 0x80 || b[2] > 0xBF) {
		return false
	}
	return true
}
