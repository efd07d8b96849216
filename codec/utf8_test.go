package codec

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// The oracle below decides "can these bytes still begin valid UTF-8?" without
// sharing anything with utf8.go: it knows no lead-byte tables, only what
// unicode/utf8 encodes. A valid string cut anywhere is a run of whole code
// points followed by a proper prefix of one more code point's encoding, so a
// byte string is a valid prefix exactly when it splits that way.

// properPrefixes is the set of every non-empty proper prefix of the UTF-8
// encoding of every Unicode scalar value, found by encoding each of them: the
// complete list of ways a valid string can stop inside a code point.
var properPrefixes = sync.OnceValue(func() map[string]bool {
	set := make(map[string]bool)
	var buf [utf8.UTFMax]byte
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue // surrogates have no UTF-8 encoding
		}
		enc := utf8.AppendRune(buf[:0], r)
		for k := 1; k < len(enc); k++ {
			set[string(enc[:k])] = true
		}
	}
	return set
})

// isValidPrefix reports whether b is a prefix of some valid UTF-8 string,
// straight from the definition: whole code points, then at most three bytes
// of an unfinished one.
func isValidPrefix(b []byte) bool {
	set := properPrefixes()
	for k := 0; k < utf8.UTFMax && k <= len(b); k++ {
		whole, tail := b[:len(b)-k], b[len(b)-k:]
		if (k == 0 || set[string(tail)]) && utf8.Valid(whole) {
			return true
		}
	}
	return false
}

// firstImpossibleByteByDefinition returns the smallest i such that s[:i+1] is
// not a prefix of any valid UTF-8 string, or -1. It is quadratic, which is why
// the fuzzers use firstImpossibleByte, checked against it here.
func firstImpossibleByteByDefinition(s []byte) int {
	for i := range s {
		if !isValidPrefix(s[:i+1]) {
			return i
		}
	}
	return -1
}

// firstImpossibleByte is the linear form of the same oracle: walk whole code
// points with utf8.DecodeRune, and where one does not decode, follow the
// longest proper prefix of a valid encoding; the byte after it is the first
// impossible one, unless the string ends first.
func firstImpossibleByte(s []byte) int {
	set := properPrefixes()
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRune(s[i:])
		if r != utf8.RuneError || size > 1 { // size > 1: a literal U+FFFD
			i += size
			continue
		}
		l := 0
		for l < utf8.UTFMax-1 && i+l < len(s) && set[string(s[i:i+l+1])] {
			l++
		}
		if i+l == len(s) {
			return -1 // the string ends inside a code point that can still be valid
		}
		return i + l
	}
	return -1
}

// feedUTF8 writes pieces to a fresh validator in order, stopping at the first
// rejection. It returns the index of the rejected piece (-1 if none) and
// whether the validator then reports a complete text.
func feedUTF8(pieces [][]byte) (rejected int, complete bool) {
	var v UTF8
	for i, p := range pieces {
		if !v.Write(p) {
			return i, false
		}
	}
	return -1, v.Complete()
}

// splitAt cuts s at the given increasing offsets. Empty pieces are kept: the
// engine may well hand the validator nothing new.
func splitAt(s []byte, cuts ...int) [][]byte {
	pieces := make([][]byte, 0, len(cuts)+1)
	prev := 0
	for _, c := range cuts {
		pieces = append(pieces, s[prev:c])
		prev = c
	}
	return append(pieces, s[prev:])
}

// pieceHolding returns the index of the piece that holds byte pos of the
// string the pieces were cut from.
func pieceHolding(pieces [][]byte, pos int) int {
	for i, p := range pieces {
		if pos < len(p) {
			return i
		}
		pos -= len(p)
	}
	return -1
}

// checkPieces checks one way of feeding s against both oracles: the verdict
// must be utf8.Valid's, and the rejection must come with the piece that
// holds the first impossible byte, neither earlier (a false alarm) nor later
// (RFC 6455 section 8.1 asks to fail as soon as the text cannot be valid).
func checkPieces(t *testing.T, s []byte, pieces [][]byte) {
	t.Helper()
	bad := firstImpossibleByte(s)
	wantRejected := -1
	if bad >= 0 {
		wantRejected = pieceHolding(pieces, bad)
	}
	rejected, complete := feedUTF8(pieces)
	if rejected != wantRejected {
		t.Fatalf(
			"%q in pieces %q: rejected piece %d, want %d (first impossible byte at %d)",
			s, pieces, rejected, wantRejected, bad)
	}
	if valid := rejected < 0 && complete; valid != utf8.Valid(s) {
		t.Fatalf(
			"%q in pieces %q: valid = %v, utf8.Valid says %v",
			s, pieces, valid, !valid)
	}
}

// utf8Vectors are the strings of the Autobahn 6.x cases (valid and invalid
// UTF-8 in text messages) and their neighbours, with the byte where each
// invalid one stops being a valid prefix, so that the oracle itself is
// checked against hand-worked answers.
var utf8Vectors = []struct {
	name string
	s    string
	bad  int // first impossible byte, -1 when none
}{
	{name: "empty", s: "", bad: -1},
	{name: "ASCII", s: "Hello, world", bad: -1},
	{name: "6.2 mixed", s: "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!", bad: -1},
	{name: "6.5 kosme", s: "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", bad: -1},
	{name: "6.3 kosme with a surrogate", s: "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", bad: 12},
	{name: "6.4 kosme with U+110000", s: "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited", bad: 12},
	{name: "6.4 kosme cut inside a valid code point", s: "\xce\xba\xe1\xbd", bad: -1},
	{name: "6.7 first 1-byte", s: "\x00", bad: -1},
	{name: "6.7 first 2-byte", s: "\xc2\x80", bad: -1},
	{name: "6.7 first 3-byte", s: "\xe0\xa0\x80", bad: -1},
	{name: "6.7 first 4-byte", s: "\xf0\x90\x80\x80", bad: -1},
	{name: "6.8 first 5-byte", s: "\xf8\x88\x80\x80\x80", bad: 0},
	{name: "6.8 first 6-byte", s: "\xfc\x84\x80\x80\x80\x80", bad: 0},
	{name: "6.9 last 1-byte", s: "\x7f", bad: -1},
	{name: "6.9 last 2-byte", s: "\xdf\xbf", bad: -1},
	{name: "6.9 last 3-byte", s: "\xef\xbf\xbf", bad: -1},
	{name: "6.9 last 4-byte U+10FFFF", s: "\xf4\x8f\xbf\xbf", bad: -1},
	{name: "6.10 last 4-byte form U+1FFFFF", s: "\xf7\xbf\xbf\xbf", bad: 0},
	{name: "6.10 last 5-byte", s: "\xfb\xbf\xbf\xbf\xbf", bad: 0},
	{name: "6.10 last 6-byte", s: "\xfd\xbf\xbf\xbf\xbf\xbf", bad: 0},
	{name: "6.11 U+D7FF", s: "\xed\x9f\xbf", bad: -1},
	{name: "6.11 U+E000", s: "\xee\x80\x80", bad: -1},
	{name: "6.11 U+FFFD", s: "\xef\xbf\xbd", bad: -1},
	{name: "6.11 U+110000", s: "\xf4\x90\x80\x80", bad: 1},
	{name: "6.12 lone first continuation", s: "\x80", bad: 0},
	{name: "6.12 lone last continuation", s: "\xbf", bad: 0},
	{name: "6.12 continuations after ASCII", s: "a\x80\xbf\x80", bad: 1},
	{name: "6.12 extra continuation after 2-byte", s: "\xc2\x80\x80", bad: 2},
	{name: "6.12 extra continuation after 4-byte", s: "\xf0\x90\x80\x80\x80", bad: 4},
	{name: "6.13 lonely C0", s: "\xc0 ", bad: 0},
	{name: "6.13 lonely C1", s: "\xc1 ", bad: 0},
	{name: "6.13 lonely C2", s: "\xc2 ", bad: 1},
	{name: "6.13 lonely DF", s: "\xdf ", bad: 1},
	{name: "6.13 lonely E0", s: "\xe0 ", bad: 1},
	{name: "6.13 lonely EF", s: "\xef ", bad: 1},
	{name: "6.13 lonely F0", s: "\xf0 ", bad: 1},
	{name: "6.13 lonely F4", s: "\xf4 ", bad: 1},
	{name: "6.13 lonely F5", s: "\xf5 ", bad: 0},
	{name: "6.13 lonely F8", s: "\xf8 ", bad: 0},
	{name: "6.13 lonely FC", s: "\xfc ", bad: 0},
	{name: "6.14 overlong 2-byte missing last", s: "\xc0", bad: 0},
	{name: "6.14 overlong 3-byte missing last", s: "\xe0\x80", bad: 1},
	{name: "6.14 overlong 4-byte missing last", s: "\xf0\x80\x80", bad: 1},
	{name: "6.14 DF missing last", s: "\xdf", bad: -1},
	{name: "6.14 EF BF missing last", s: "\xef\xbf", bad: -1},
	{name: "6.14 F4 8F BF missing last", s: "\xf4\x8f\xbf", bad: -1},
	{name: "6.14 F7 BF BF missing last", s: "\xf7\xbf\xbf", bad: 0},
	{name: "6.15 concatenated incomplete sequences", s: "\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf", bad: 0},
	{name: "6.15 valid start then incomplete sequences", s: "\xdf\xef\xbf", bad: 1},
	{name: "6.16 FE", s: "\xfe", bad: 0},
	{name: "6.16 FF", s: "\xff", bad: 0},
	{name: "6.16 FE FE FF FF", s: "\xfe\xfe\xff\xff", bad: 0},
	{name: "6.17 overlong slash 2-byte", s: "\xc0\xaf", bad: 0},
	{name: "6.17 overlong slash 3-byte", s: "\xe0\x80\xaf", bad: 1},
	{name: "6.17 overlong slash 4-byte", s: "\xf0\x80\x80\xaf", bad: 1},
	{name: "6.17 overlong slash 5-byte", s: "\xf8\x80\x80\x80\xaf", bad: 0},
	{name: "6.17 overlong slash 6-byte", s: "\xfc\x80\x80\x80\x80\xaf", bad: 0},
	{name: "6.18 maximum overlong 2-byte", s: "\xc1\xbf", bad: 0},
	{name: "6.18 maximum overlong 3-byte", s: "\xe0\x9f\xbf", bad: 1},
	{name: "6.18 maximum overlong 4-byte", s: "\xf0\x8f\xbf\xbf", bad: 1},
	{name: "6.19 overlong NUL 2-byte", s: "\xc0\x80", bad: 0},
	{name: "6.19 overlong NUL 3-byte", s: "\xe0\x80\x80", bad: 1},
	{name: "6.19 overlong NUL 4-byte", s: "\xf0\x80\x80\x80", bad: 1},
	{name: "6.20 U+D800", s: "\xed\xa0\x80", bad: 1},
	{name: "6.20 U+DB7F", s: "\xed\xad\xbf", bad: 1},
	{name: "6.20 U+DB80", s: "\xed\xae\x80", bad: 1},
	{name: "6.20 U+DBFF", s: "\xed\xaf\xbf", bad: 1},
	{name: "6.20 U+DC00", s: "\xed\xb0\x80", bad: 1},
	{name: "6.20 U+DF80", s: "\xed\xbe\x80", bad: 1},
	{name: "6.20 U+DFFF", s: "\xed\xbf\xbf", bad: 1},
	{name: "6.21 U+D800 U+DC00", s: "\xed\xa0\x80\xed\xb0\x80", bad: 1},
	{name: "6.21 U+DBFF U+DFFF", s: "\xed\xaf\xbf\xed\xbf\xbf", bad: 1},
	{name: "6.21 surrogate pair after text", s: "ok\xed\xa0\x80\xed\xb0\x80", bad: 3},
	{name: "6.22 U+FFFE", s: "\xef\xbf\xbe", bad: -1},
	{name: "6.22 U+FFFF", s: "\xef\xbf\xbf", bad: -1},
	{name: "6.22 U+FDD0", s: "\xef\xb7\x90", bad: -1},
	{name: "6.22 U+1FFFE", s: "\xf0\x9f\xbf\xbe", bad: -1},
	{name: "6.22 U+10FFFE", s: "\xf4\x8f\xbf\xbe", bad: -1},
	{name: "6.23 U+FFFC U+FFFD", s: "\xef\xbf\xbc\xef\xbf\xbd", bad: -1},
	{name: "emoji", s: "push \xf0\x9f\x9a\x80 done", bad: -1},
	{name: "4-byte lead followed by ASCII after two continuations", s: "\xf0\x9f\x9aA", bad: 3},
	{name: "3-byte lead followed by a new lead", s: "\xe2\x82\xe2\x82\xac", bad: 2},
	{name: "ED at the highest allowed second byte", s: "\xed\x9f", bad: -1},
	{name: "F4 at the highest allowed second byte", s: "\xf4\x8f", bad: -1},
	{name: "F0 at the lowest allowed second byte", s: "\xf0\x90", bad: -1},
	{name: "E0 at the lowest allowed second byte", s: "\xe0\xa0", bad: -1},
	{name: "invalid byte after a long valid run", s: strings.Repeat("\xce\xbaabc", 20) + "\xff" + strings.Repeat("x", 10), bad: 100},
}

// TestUTF8Oracle checks the two oracle forms against each other and against
// the hand-worked answers before any test trusts them.
func TestUTF8Oracle(t *testing.T) {
	for _, tc := range utf8Vectors {
		s := []byte(tc.s)
		if got := firstImpossibleByteByDefinition(s); got != tc.bad {
			t.Errorf(
				"%s: definition oracle says first impossible byte %d, vector says %d",
				tc.name, got, tc.bad)
		}
		if got := firstImpossibleByte(s); got != tc.bad {
			t.Errorf(
				"%s: linear oracle says first impossible byte %d, vector says %d",
				tc.name, got, tc.bad)
		}
	}
	for _, s := range exhaustiveShortStrings() {
		if a, b := firstImpossibleByteByDefinition(s), firstImpossibleByte(s); a != b {
			t.Fatalf(
				"%q: definition oracle %d, linear oracle %d",
				s, a, b)
		}
	}
}

// TestUTF8EverySplit feeds each vector in two pieces cut at every offset, and
// in three pieces cut at every pair of offsets: the verdict and the piece that
// fails must not depend on where TCP or the client cut the text.
func TestUTF8EverySplit(t *testing.T) {
	for _, tc := range utf8Vectors {
		t.Run(tc.name, func(t *testing.T) {
			s := []byte(tc.s)
			for i := 0; i <= len(s); i++ {
				checkPieces(t, s, splitAt(s, i))
				for j := i; j <= len(s); j++ {
					checkPieces(t, s, splitAt(s, i, j))
				}
			}
		})
	}
}

// TestUTF8ByteAtATime feeds each vector one byte per Write, where fail-fast
// is sharpest: the Write of the first impossible byte, and no other, fails.
func TestUTF8ByteAtATime(t *testing.T) {
	for _, tc := range utf8Vectors {
		s := []byte(tc.s)
		pieces := make([][]byte, len(s))
		for i := range s {
			pieces[i] = s[i : i+1]
		}
		rejected, complete := feedUTF8(pieces)
		if rejected != tc.bad {
			t.Errorf(
				"%s: byte %d rejected, want %d",
				tc.name, rejected, tc.bad)
		}
		if valid := rejected < 0 && complete; valid != utf8.Valid(s) {
			t.Errorf(
				"%s: valid = %v, utf8.Valid says %v",
				tc.name, valid, !valid)
		}
	}
}

// interestingBytes are the byte values where UTF-8's rules change: the edges
// of ASCII, of the continuation range and of its sub-ranges that decide
// overlongs, surrogates and the U+10FFFF ceiling, and every lead byte class.
var interestingBytes = []byte{
	0x00, 0x41, 0x7F,
	0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
	0xC0, 0xC1, 0xC2, 0xDF,
	0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF,
	0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFB, 0xFC, 0xFE, 0xFF,
}

// exhaustiveShortStrings returns every string of up to two arbitrary bytes
// and every string of three and four bytes drawn from interestingBytes: all
// the ways one code point can start, end, or go wrong, and the boundaries
// between two of them.
func exhaustiveShortStrings() [][]byte {
	out := [][]byte{{}}
	for a := range 256 {
		out = append(out, []byte{byte(a)})
		for b := range 256 {
			out = append(out, []byte{byte(a), byte(b)})
		}
	}
	for _, a := range interestingBytes {
		for _, b := range interestingBytes {
			for _, c := range interestingBytes {
				out = append(out, []byte{a, b, c})
				for _, d := range interestingBytes {
					out = append(out, []byte{a, b, c, d})
				}
			}
		}
	}
	return out
}

// TestUTF8Exhaustive runs every short string whole, byte at a time and cut
// at every offset.
func TestUTF8Exhaustive(t *testing.T) {
	for _, s := range exhaustiveShortStrings() {
		checkPieces(t, s, [][]byte{s})
		bytewise := make([][]byte, len(s))
		for i := range s {
			bytewise[i] = s[i : i+1]
		}
		checkPieces(t, s, bytewise)
		for i := 1; i < len(s); i++ {
			checkPieces(t, s, splitAt(s, i))
		}
	}
}

// randomText builds a string out of valid code points of every length, with
// some probability of stray bytes, cut code points and surrogate encodings,
// so that most strings are valid for a while and then go wrong somewhere.
func randomText(rng *rand.Rand, n int, corrupt bool) []byte {
	var b []byte
	for len(b) < n {
		switch k := rng.IntN(10); {
		case k < 3:
			b = append(b, byte(rng.IntN(0x80)))
		case k < 5:
			b = utf8.AppendRune(b, rune(0x80+rng.IntN(0x800-0x80)))
		case k < 7:
			r := rune(0x800 + rng.IntN(0x10000-0x800))
			if !utf8.ValidRune(r) {
				r = 0xFFFD
			}
			b = utf8.AppendRune(b, r)
		case k < 9:
			b = utf8.AppendRune(b, rune(0x10000+rng.IntN(utf8.MaxRune+1-0x10000)))
		case corrupt:
			switch rng.IntN(3) {
			case 0:
				b = append(b, byte(rng.IntN(256)))
			case 1:
				enc := utf8.AppendRune(nil, rune(0x80+rng.IntN(utf8.MaxRune-0x80)))
				b = append(b, enc[:len(enc)-1]...) // a code point with its last byte missing
			case 2:
				b = append(b, 0xED, byte(0xA0+rng.IntN(0x20)), byte(0x80+rng.IntN(0x40))) // a surrogate
			}
		}
	}
	return b
}

// TestUTF8RandomSplits cuts random texts, valid and not, at random points
// into random numbers of pieces.
func TestUTF8RandomSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		s := randomText(rng, rng.IntN(64), rng.IntN(2) == 0)
		cuts := make([]int, rng.IntN(6))
		for i := range cuts {
			cuts[i] = rng.IntN(len(s) + 1)
		}
		slices.Sort(cuts)
		checkPieces(t, s, splitAt(s, cuts...))
	}
}

// TestUTF8Reset checks that Reset forgets a code point cut by the end of the
// previous message, which would otherwise corrupt the next one: the decoder
// reuses one validator per connection.
func TestUTF8Reset(t *testing.T) {
	tests := []struct {
		name   string
		before string // the previous message, possibly cut or invalid
		after  string // the next message, valid on its own
	}{
		{
			name:   "after a message cut inside a 2-byte code point",
			before: "\xce",
			after:  "abc",
		},
		{
			name:   "after a message cut inside a 4-byte code point",
			before: "\xf0\x9f\x9a",
			after:  "\xce\xba",
		},
		{
			name:   "after a rejected message",
			before: "\xff",
			after:  "ok",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v UTF8
			v.Write([]byte(tc.before))
			if v.Complete() && utf8.ValidString(tc.before) {
				t.Fatalf(
					"test setup: %q should leave the validator mid code point or failed",
					tc.before)
			}
			v.Reset()
			if !v.Write([]byte(tc.after)) || !v.Complete() {
				t.Errorf(
					"%q after Reset rejected",
					tc.after)
			}
		})
	}
}

// TestUTF8EmptyWrite checks that an empty piece in the middle of a code
// point changes nothing: a frame may carry an empty payload between two
// halves of a code point.
func TestUTF8EmptyWrite(t *testing.T) {
	var v UTF8
	for _, p := range []string{"\xf0", "", "\x9f", "", "", "\x9a", "", "\x80", ""} {
		if !v.Write([]byte(p)) {
			t.Fatalf(
				"Write(%q) rejected a valid prefix",
				p)
		}
	}
	if !v.Complete() {
		t.Errorf(
			"U+1F680 fed with empty pieces in between is not complete")
	}
}

func BenchmarkUTF8(b *testing.B) {
	const size = 4 << 10
	ascii := bytes.Repeat([]byte("herald push text "), size/17+1)[:size]
	// Mixed: 1-, 2-, 3- and 4-byte code points, cut to 4 KiB at a code point
	// boundary so that the text is valid.
	mixed := bytes.Repeat([]byte("a\u00e9\u20ac\U0001F680 price: 10\u20ac "), size/24+1)
	for len(mixed) > size || !utf8.Valid(mixed) {
		mixed = mixed[:len(mixed)-1]
	}
	for _, bc := range []struct {
		name string
		text []byte
	}{
		{name: "ASCII", text: ascii},
		{name: "mixed", text: mixed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.text)))
			b.ReportAllocs()
			var v UTF8
			for b.Loop() {
				v.Reset()
				if !v.Write(bc.text) || !v.Complete() {
					b.Fatal("valid text rejected")
				}
			}
		})
	}
}
