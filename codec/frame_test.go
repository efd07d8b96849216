package codec

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// testMask is the masking key of the example in RFC 6455 section 5.7: four
// distinct bytes, so that unmasking with the wrong offset shows.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// xorMask masks or unmasks p as RFC 6455 section 5.3 describes it, byte by
// byte: the reference the tests hold ws.Cipher (which Decoder uses) against.
func xorMask(p []byte, mask [4]byte) []byte {
	out := make([]byte, len(p))
	for i := range p {
		out[i] = p[i] ^ mask[i%4]
	}
	return out
}

// wantCloseError fails the test unless err is exactly want (both nil, or the
// same *CloseError value, which the engine compares against and whose code it
// sends).
func wantCloseError(t *testing.T, what string, err error, want *CloseError) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf(
				"%s: unexpected error %v",
				what, err)
		}
		return
	}
	var ce *CloseError
	if !errors.As(err, &ce) || ce != want {
		t.Fatalf(
			"%s: error %v, want %v",
			what, err, want)
	}
}

func TestParseHeader(t *testing.T) {
	m := testMask
	tests := []struct {
		name  string
		raw   []byte // exactly one header, followed by nothing
		want  ws.Header
		wantN int
	}{
		{
			name:  "7-bit length 0, masked",
			raw:   []byte{0x81, 0x80, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: m},
			wantN: 6,
		},
		{
			name:  "7-bit length 125, masked",
			raw:   []byte{0x82, 0x80 | 125, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: m, Length: 125},
			wantN: 6,
		},
		{
			name:  "7-bit length 125, unmasked",
			raw:   []byte{0x82, 125},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 125},
			wantN: 2,
		},
		{
			name:  "16-bit length 126, masked",
			raw:   []byte{0x82, 0x80 | 126, 0x00, 0x7E, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: m, Length: 126},
			wantN: 8,
		},
		{
			name:  "16-bit length 65535, masked",
			raw:   []byte{0x82, 0x80 | 126, 0xFF, 0xFF, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: m, Length: 65535},
			wantN: 8,
		},
		{
			name:  "16-bit length 65535, unmasked",
			raw:   []byte{0x82, 126, 0xFF, 0xFF},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 65535},
			wantN: 4,
		},
		{
			// RFC 6455 section 5.2 tells senders to use the shortest length
			// encoding but does not ask receivers to enforce it; gobwas and
			// gorilla accept the longer forms too.
			name:  "16-bit encoding of a 7-bit length is accepted",
			raw:   []byte{0x81, 0x80 | 126, 0x00, 0x05, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: m, Length: 5},
			wantN: 8,
		},
		{
			name:  "64-bit length 65536, masked",
			raw:   []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: m, Length: 65536},
			wantN: 14,
		},
		{
			name:  "64-bit length 2^32, masked",
			raw:   []byte{0x82, 0x80 | 127, 0, 0, 0, 0x01, 0, 0, 0, 0, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: m, Length: 1 << 32},
			wantN: 14,
		},
		{
			name:  "64-bit length 2^63-1, the largest without the top bit",
			raw:   []byte{0x82, 0x80 | 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: m, Length: 1<<63 - 1},
			wantN: 14,
		},
		{
			name:  "64-bit length 65536, unmasked",
			raw:   []byte{0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00},
			want:  ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 65536},
			wantN: 10,
		},
		{
			// ParseHeader reports what the header says; judging it is
			// CheckClientHeader's job.
			name:  "every flag and reserved bit set, reserved opcode",
			raw:   []byte{0xFF, 0x80 | 3, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Fin: true, Rsv: 0x7, OpCode: 0xF, Masked: true, Mask: m, Length: 3},
			wantN: 6,
		},
		{
			name:  "non-final continuation with rsv2",
			raw:   []byte{0x20, 0x80 | 1, m[0], m[1], m[2], m[3]},
			want:  ws.Header{Rsv: ws.Rsv(false, true, false), OpCode: ws.OpContinuation, Masked: true, Mask: m, Length: 1},
			wantN: 6,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.raw) != tc.wantN {
				t.Fatalf(
					"test setup: raw header is %d bytes, want %d",
					len(tc.raw), tc.wantN)
			}
			// Every prefix is "need more", never an error or a header:
			// the engine calls ParseHeader on whatever has arrived.
			for i := range len(tc.raw) {
				h, n, err := ParseHeader(tc.raw[:i])
				if n != 0 || err != nil {
					t.Fatalf(
						"prefix of %d bytes: n = %d, err = %v (header %+v), want need-more",
						i, n, err, h)
				}
			}
			// Bytes after the header (payload, next frame) are not read.
			withTail := append(bytes.Clone(tc.raw), 0xAA, 0xBB, 0xCC, 0xDD, 0xEE)
			for _, b := range [][]byte{tc.raw, withTail} {
				h, n, err := ParseHeader(b)
				if err != nil || n != tc.wantN || h != tc.want {
					t.Fatalf(
						"ParseHeader(% x) = %+v, %d, %v; want %+v, %d, nil",
						b, h, n, err, tc.want, tc.wantN)
				}
			}
			// An independent reader agrees.
			gh, err := ws.ReadHeader(bytes.NewReader(tc.raw))
			if err != nil || gh != tc.want {
				t.Fatalf(
					"gobwas ReadHeader = %+v, %v; want %+v",
					gh, err, tc.want)
			}
		})
	}
}

// TestParseHeaderLengthMSB: RFC 6455 section 5.2 says the most significant
// bit of a 64-bit length must be 0. The error comes as soon as the length is
// readable, before the mask has arrived, so a client cannot park the parser.
func TestParseHeaderLengthMSB(t *testing.T) {
	m := testMask
	tests := []struct {
		name string
		raw  []byte
	}{
		{
			name: "masked, top bit only",
			raw:  []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, m[0], m[1], m[2], m[3]},
		},
		{
			name: "masked, all bits",
			raw:  []byte{0x81, 0x80 | 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, m[0], m[1], m[2], m[3]},
		},
		{
			name: "unmasked",
			raw:  []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0x01},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i <= len(tc.raw); i++ {
				_, n, err := ParseHeader(tc.raw[:i])
				if i < 10 {
					if n != 0 || err != nil {
						t.Fatalf(
							"prefix of %d bytes: n = %d, err = %v; want need-more",
							i, n, err)
					}
					continue
				}
				if n != 0 {
					t.Fatalf(
						"prefix of %d bytes: n = %d with an error",
						i, n)
				}
				wantCloseError(t, fmt.Sprintf("prefix of %d bytes", i), err, ErrLengthOverflow)
			}
			if _, err := ws.ReadHeader(bytes.NewReader(tc.raw)); err != ws.ErrHeaderLengthMSB {
				t.Fatalf(
					"gobwas ReadHeader error %v, want %v: the test frame is not what it claims",
					err, ws.ErrHeaderLengthMSB)
			}
		})
	}
}

func TestCheckClientHeader(t *testing.T) {
	masked := func(fin bool, rsv byte, op ws.OpCode, length int64) ws.Header {
		return ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Masked: true, Mask: testMask, Length: length}
	}
	rsv1 := ws.Rsv(true, false, false)
	rsv2 := ws.Rsv(false, true, false)
	rsv3 := ws.Rsv(false, false, true)
	type row struct {
		name       string
		h          ws.Header
		allowedRsv byte
		want       *CloseError
	}
	tests := []row{
		{
			name: "text",
			h:    masked(true, 0, ws.OpText, 10),
		},
		{
			name: "binary, non-final, length far above any message limit",
			h:    masked(false, 0, ws.OpBinary, 1<<62),
		},
		{
			name: "continuation",
			h:    masked(false, 0, ws.OpContinuation, 0),
		},
		{
			name: "close",
			h:    masked(true, 0, ws.OpClose, 2),
		},
		{
			name: "ping with 125 bytes, the control maximum",
			h:    masked(true, 0, ws.OpPing, 125),
		},
		{
			name: "pong empty",
			h:    masked(true, 0, ws.OpPong, 0),
		},
		{
			name: "rsv1 without extension",
			h:    masked(true, rsv1, ws.OpText, 1),
			want: ErrReservedBits,
		},
		{
			name: "rsv2 without extension",
			h:    masked(true, rsv2, ws.OpText, 1),
			want: ErrReservedBits,
		},
		{
			name: "rsv3 without extension",
			h:    masked(true, rsv3, ws.OpText, 1),
			want: ErrReservedBits,
		},
		{
			name: "rsv1 on a control frame without extension",
			h:    masked(true, rsv1, ws.OpPing, 0),
			want: ErrReservedBits,
		},
		{
			name:       "rsv1 allowed (permessage-deflate)",
			h:          masked(true, rsv1, ws.OpText, 1),
			allowedRsv: rsv1,
		},
		{
			name:       "rsv2 allowed",
			h:          masked(true, rsv2, ws.OpText, 1),
			allowedRsv: rsv2,
		},
		{
			name:       "rsv3 allowed",
			h:          masked(true, rsv3, ws.OpText, 1),
			allowedRsv: rsv3,
		},
		{
			name:       "rsv2 when only rsv1 is allowed",
			h:          masked(true, rsv2, ws.OpText, 1),
			allowedRsv: rsv1,
			want:       ErrReservedBits,
		},
		{
			name:       "rsv3 when only rsv1 is allowed",
			h:          masked(true, rsv3, ws.OpText, 1),
			allowedRsv: rsv1,
			want:       ErrReservedBits,
		},
		{
			name:       "rsv1 and rsv3 when only rsv1 is allowed",
			h:          masked(true, rsv1|rsv3, ws.OpBinary, 1),
			allowedRsv: rsv1,
			want:       ErrReservedBits,
		},
		{
			name: "unmasked text",
			h:    ws.Header{Fin: true, OpCode: ws.OpText, Length: 5},
			want: ErrUnmasked,
		},
		{
			name: "unmasked close",
			h:    ws.Header{Fin: true, OpCode: ws.OpClose},
			want: ErrUnmasked,
		},
		{
			name: "ping with 126 bytes",
			h:    masked(true, 0, ws.OpPing, 126),
			want: ErrControlTooLong,
		},
		{
			name: "close with 126 bytes",
			h:    masked(true, 0, ws.OpClose, 126),
			want: ErrControlTooLong,
		},
		{
			name: "pong with a 64-bit length",
			h:    masked(true, 0, ws.OpPong, 1<<40),
			want: ErrControlTooLong,
		},
		{
			name: "fragmented ping",
			h:    masked(false, 0, ws.OpPing, 2),
			want: ErrControlFragmented,
		},
		{
			name: "fragmented close",
			h:    masked(false, 0, ws.OpClose, 2),
			want: ErrControlFragmented,
		},
		{
			name: "fragmented empty pong",
			h:    masked(false, 0, ws.OpPong, 0),
			want: ErrControlFragmented,
		},
	}
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		tests = append(tests, row{
			name: fmt.Sprintf("reserved opcode 0x%X", byte(op)),
			h:    masked(true, 0, op, 0),
			want: ErrReservedOpcode,
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckClientHeader(tc.h, tc.allowedRsv)
			wantCloseError(t, "CheckClientHeader", err, tc.want)
			if tc.want != nil && tc.want.Code != ws.StatusProtocolError {
				t.Fatalf(
					"header rule violations close with %d, want 1002",
					tc.want.Code)
			}
		})
	}
}

// frameSpec is one client data frame for the Decoder tests.
type frameSpec struct {
	fin     bool
	op      ws.OpCode
	payload string
}

func textFrame(fin bool, p string) frameSpec {
	return frameSpec{fin: fin, op: ws.OpText, payload: p}
}

func binaryFrame(fin bool, p string) frameSpec {
	return frameSpec{fin: fin, op: ws.OpBinary, payload: p}
}

func contFrame(fin bool, p string) frameSpec {
	return frameSpec{fin: fin, op: ws.OpContinuation, payload: p}
}

// message is a message the Decoder reported complete, with its unmasked
// payload as reassembled by the test.
type message struct {
	op      ws.OpCode
	payload string
}

// decoderFailure says where a Decoder rejected a stream.
type decoderFailure struct {
	err   error
	frame int    // index of the frame being processed
	stage string // "Begin", "Payload" or "End"
	first int    // for Payload: offset in the frame's payload of the failing chunk
	end   int    // and of the byte after it
}

// runDecoder passes frames through one Decoder as the engine does, feeding
// each payload, masked, in chunks of at most chunk bytes, and checks the
// bookkeeping (Remaining, Size, unmasking) on the way.
func runDecoder(t *testing.T, frames []frameSpec, maxSize int64, chunk int) ([]message, *decoderFailure) {
	t.Helper()
	var (
		d        Decoder
		messages []message
		msg      []byte
		size     int64
	)
	for i, f := range frames {
		h := ws.Header{
			Fin:    f.fin,
			OpCode: f.op,
			Masked: true,
			Mask:   testMask,
			Length: int64(len(f.payload)),
		}
		if err := d.Begin(h, maxSize); err != nil {
			return messages, &decoderFailure{err: err, frame: i, stage: "Begin"}
		}
		size += h.Length
		if d.Size() != size || d.Remaining() != h.Length || !d.InMessage() {
			t.Fatalf(
				"frame %d after Begin: Size %d Remaining %d InMessage %v; want %d, %d, true",
				i, d.Size(), d.Remaining(), d.InMessage(), size, h.Length)
		}
		wire := xorMask([]byte(f.payload), testMask)
		for off := 0; off < len(wire); off += chunk {
			end := min(off+chunk, len(wire))
			err := d.Payload(wire[off:end])
			msg = append(msg, wire[off:end]...)
			if err != nil {
				return messages, &decoderFailure{err: err, frame: i, stage: "Payload", first: off, end: end}
			}
			if d.Remaining() != h.Length-int64(end) {
				t.Fatalf(
					"frame %d after %d payload bytes: Remaining %d, want %d",
					i, end, d.Remaining(), h.Length-int64(end))
			}
		}
		if !bytes.Equal(wire, []byte(f.payload)) {
			t.Fatalf(
				"frame %d unmasked in chunks of %d to %q, want %q",
				i, chunk, wire, f.payload)
		}
		op, err := d.End()
		if err != nil {
			return messages, &decoderFailure{err: err, frame: i, stage: "End"}
		}
		if op != 0 {
			messages = append(messages, message{op: op, payload: string(msg)})
			msg, size = nil, 0
		}
		if d.InMessage() != (op == 0) {
			t.Fatalf(
				"frame %d: InMessage %v after End returned opcode %v",
				i, d.InMessage(), op)
		}
	}
	return messages, nil
}

func TestDecoder(t *testing.T) {
	tests := []struct {
		name     string
		maxSize  int64 // DefaultMaxMessageSize when 0
		frames   []frameSpec
		want     []message
		wantErr  *CloseError
		errFrame int    // frame the error comes with
		errStage string // "Begin", "Payload" or "End"
		errByte  int    // for Payload: offset in that frame of the byte that makes the text invalid
	}{
		{
			name:   "single text",
			frames: []frameSpec{textFrame(true, "hello")},
			want:   []message{{ws.OpText, "hello"}},
		},
		{
			name:   "empty text",
			frames: []frameSpec{textFrame(true, "")},
			want:   []message{{ws.OpText, ""}},
		},
		{
			name:   "binary is not checked as UTF-8",
			frames: []frameSpec{binaryFrame(true, "\xff\xfe\xed\xa0\x80\xc0")},
			want:   []message{{ws.OpBinary, "\xff\xfe\xed\xa0\x80\xc0"}},
		},
		{
			name:   "binary may end inside what would be a code point",
			frames: []frameSpec{binaryFrame(false, "a\xce"), contFrame(true, "")},
			want:   []message{{ws.OpBinary, "a\xce"}},
		},
		{
			name:   "fragmented text",
			frames: []frameSpec{textFrame(false, "Hel"), contFrame(false, "lo, "), contFrame(true, "world")},
			want:   []message{{ws.OpText, "Hello, world"}},
		},
		{
			name:   "fragmented text with empty fragments",
			frames: []frameSpec{textFrame(false, ""), contFrame(false, "a"), contFrame(false, ""), contFrame(true, "")},
			want:   []message{{ws.OpText, "a"}},
		},
		{
			name:   "2-byte code point split between fragments",
			frames: []frameSpec{textFrame(false, "\xce\xba\xe1\xbd\xb9\xcf"), contFrame(true, "\x83\xce\xbc\xce\xb5")},
			want:   []message{{ws.OpText, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"}},
		},
		{
			name:   "4-byte code point split over three fragments",
			frames: []frameSpec{textFrame(false, "go \xf0"), contFrame(false, "\x9f\x9a"), contFrame(true, "\x80!")},
			want:   []message{{ws.OpText, "go 🚀!"}},
		},
		{
			name:   "two messages in a row",
			frames: []frameSpec{textFrame(false, "a"), contFrame(true, "b"), binaryFrame(true, "c"), textFrame(true, "d")},
			want:   []message{{ws.OpText, "ab"}, {ws.OpBinary, "c"}, {ws.OpText, "d"}},
		},
		{
			name:     "continuation without a message",
			frames:   []frameSpec{contFrame(true, "x")},
			wantErr:  ErrUnexpectedContinue,
			errFrame: 0,
			errStage: "Begin",
		},
		{
			name:     "continuation after the message ended",
			frames:   []frameSpec{textFrame(true, "a"), contFrame(true, "b")},
			want:     []message{{ws.OpText, "a"}},
			wantErr:  ErrUnexpectedContinue,
			errFrame: 1,
			errStage: "Begin",
		},
		{
			name:     "text inside a fragmented text message",
			frames:   []frameSpec{textFrame(false, "a"), textFrame(true, "b")},
			wantErr:  ErrExpectedContinue,
			errFrame: 1,
			errStage: "Begin",
		},
		{
			name:     "binary inside a fragmented text message",
			frames:   []frameSpec{textFrame(false, "a"), contFrame(false, "b"), binaryFrame(true, "c")},
			wantErr:  ErrExpectedContinue,
			errFrame: 2,
			errStage: "Begin",
		},
		{
			name:     "text inside a fragmented binary message",
			frames:   []frameSpec{binaryFrame(false, "a"), textFrame(false, "b")},
			wantErr:  ErrExpectedContinue,
			errFrame: 1,
			errStage: "Begin",
		},
		{
			name:    "single frame exactly at the limit",
			maxSize: 10,
			frames:  []frameSpec{textFrame(true, "0123456789")},
			want:    []message{{ws.OpText, "0123456789"}},
		},
		{
			name:     "single frame one byte over the limit",
			maxSize:  10,
			frames:   []frameSpec{binaryFrame(true, "0123456789A")},
			wantErr:  ErrMessageTooBig,
			errFrame: 0,
			errStage: "Begin",
		},
		{
			name:    "fragments adding up exactly to the limit",
			maxSize: 10,
			frames:  []frameSpec{binaryFrame(false, "0123"), contFrame(false, "4567"), contFrame(true, "89")},
			want:    []message{{ws.OpBinary, "0123456789"}},
		},
		{
			name:     "fragments adding up to one byte over the limit",
			maxSize:  10,
			frames:   []frameSpec{textFrame(false, "0123"), contFrame(false, "4567"), contFrame(true, "89A")},
			wantErr:  ErrMessageTooBig,
			errFrame: 2,
			errStage: "Begin",
		},
		{
			name:     "one byte over the limit in a fragment after one that filled it",
			maxSize:  10,
			frames:   []frameSpec{binaryFrame(false, "0123456789"), contFrame(false, ""), contFrame(true, "A")},
			wantErr:  ErrMessageTooBig,
			errFrame: 2,
			errStage: "Begin",
		},
		{
			name:    "the limit is per message",
			maxSize: 10,
			frames:  []frameSpec{binaryFrame(false, "01234"), contFrame(true, "56789"), textFrame(true, "0123456789")},
			want:    []message{{ws.OpBinary, "0123456789"}, {ws.OpText, "0123456789"}},
		},
		{
			name:    "empty message under a zero limit",
			maxSize: -1, // stands for 0, see below
			frames:  []frameSpec{textFrame(true, "")},
			want:    []message{{ws.OpText, ""}},
		},
		{
			name:     "invalid byte in the middle of a text frame",
			frames:   []frameSpec{textFrame(true, "abc\xffdef")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 0,
			errStage: "Payload",
			errByte:  3,
		},
		{
			name:     "invalid text in a non-final frame fails before the message ends",
			frames:   []frameSpec{textFrame(false, "ok\xc0\x80"), contFrame(true, "rest")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 0,
			errStage: "Payload",
			errByte:  2,
		},
		{
			name:     "surrogate split between fragments fails at its second byte",
			frames:   []frameSpec{textFrame(false, "ab\xed"), contFrame(true, "\xa0\x80")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 1,
			errStage: "Payload",
			errByte:  0,
		},
		{
			name:     "code point above U+10FFFF split between fragments",
			frames:   []frameSpec{textFrame(false, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4"), contFrame(false, "\x90\x80\x80"), contFrame(true, "edited")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 1,
			errStage: "Payload",
			errByte:  0,
		},
		{
			name:     "overlong form split over three fragments fails at its fourth byte's frame",
			frames:   []frameSpec{textFrame(false, "\xf0\x90"), contFrame(false, "\x80"), contFrame(true, "A")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 2,
			errStage: "Payload",
			errByte:  0,
		},
		{
			name:     "lead byte without continuation across fragments",
			frames:   []frameSpec{textFrame(false, "\xe2\x82"), contFrame(true, "x")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 1,
			errStage: "Payload",
			errByte:  0,
		},
		{
			name:     "continuation of a text message after a valid 2-byte end is checked",
			frames:   []frameSpec{textFrame(false, "\xce\xba"), contFrame(true, "\x80")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 1,
			errStage: "Payload",
			errByte:  0,
		},
		{
			name:     "text ending inside a code point",
			frames:   []frameSpec{textFrame(true, "a\xce")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 0,
			errStage: "End",
		},
		{
			name:     "fragmented text ending inside a code point",
			frames:   []frameSpec{textFrame(false, "a"), contFrame(true, "\xf0\x9f\x9a")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 1,
			errStage: "End",
		},
		{
			name:     "fragmented text ending inside a code point, then an empty final fragment",
			frames:   []frameSpec{textFrame(false, "\xe2\x82"), contFrame(true, "")},
			wantErr:  ErrInvalidUTF8,
			errFrame: 1,
			errStage: "End",
		},
	}
	for _, tc := range tests {
		maxSize := tc.maxSize
		switch maxSize {
		case 0:
			maxSize = DefaultMaxMessageSize
		case -1:
			maxSize = 0
		}
		for _, chunk := range []int{1, 2, 3, 5, 16, 1 << 20} {
			t.Run(fmt.Sprintf("%s/chunks of %d", tc.name, chunk), func(t *testing.T) {
				got, fail := runDecoder(t, tc.frames, maxSize, chunk)
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Fatalf(
						"messages %q, want %q",
						got, tc.want)
				}
				if tc.wantErr == nil {
					if fail != nil {
						t.Fatalf(
							"frame %d %s: unexpected error %v",
							fail.frame, fail.stage, fail.err)
					}
					return
				}
				if fail == nil {
					t.Fatalf(
						"no error, want %v at frame %d %s",
						tc.wantErr, tc.errFrame, tc.errStage)
				}
				wantCloseError(t, fmt.Sprintf("frame %d %s", fail.frame, fail.stage), fail.err, tc.wantErr)
				if fail.frame != tc.errFrame || fail.stage != tc.errStage {
					t.Fatalf(
						"error at frame %d %s, want frame %d %s",
						fail.frame, fail.stage, tc.errFrame, tc.errStage)
				}
				// Fail-fast: the chunk that fails is the one holding the
				// first byte that makes the text impossible.
				if tc.errStage == "Payload" && (tc.errByte < fail.first || tc.errByte >= fail.end) {
					t.Fatalf(
						"failing chunk [%d, %d) does not hold byte %d",
						fail.first, fail.end, tc.errByte)
				}
			})
		}
	}
}

// TestDecoderUnmask holds the unmasking in pieces against the byte-by-byte
// definition, for every length up to past two SIMD blocks, every starting
// offset in the mask and several chunk sizes, then for a large frame in
// uneven chunks: a wrong mask offset between chunks would corrupt every
// message that TCP delivers in more than one read.
func TestDecoderUnmask(t *testing.T) {
	payload := make([]byte, 70000)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	check := func(n int, chunks []int) {
		t.Helper()
		var d Decoder
		h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask, Length: int64(n)}
		if err := d.Begin(h, 1<<20); err != nil {
			t.Fatal(err)
		}
		wire := xorMask(payload[:n], testMask)
		off := 0
		for i := 0; off < n; i++ {
			end := min(off+chunks[i%len(chunks)], n)
			if err := d.Payload(wire[off:end]); err != nil {
				t.Fatal(err)
			}
			off = end
		}
		if !bytes.Equal(wire, payload[:n]) {
			t.Fatalf(
				"length %d in chunks %v: unmasked payload differs",
				n, chunks)
		}
		if op, err := d.End(); op != ws.OpBinary || err != nil {
			t.Fatalf(
				"End = %v, %v",
				op, err)
		}
	}
	for n := 0; n <= 80; n++ {
		for lead := 0; lead < 4; lead++ {
			for _, c := range []int{1, 3, 16, 17, 33, 80} {
				check(n, []int{max(lead, 1), c})
			}
		}
	}
	check(len(payload), []int{1, 4093, 2, 65536, 31})
	check(len(payload), []int{len(payload)})
}

func TestParseClose(t *testing.T) {
	type row struct {
		name       string
		payload    []byte
		wantCode   ws.StatusCode
		wantReason string
		wantErr    *CloseError
	}
	withCode := func(code uint16, reason string) []byte {
		return append([]byte{byte(code >> 8), byte(code)}, reason...)
	}
	tests := []row{
		{
			name:    "empty payload: valid, no code",
			payload: nil,
		},
		{
			name:    "1-byte payload",
			payload: []byte{0x03},
			wantErr: ErrCloseTooShort,
		},
		{
			name:     "code without reason",
			payload:  withCode(1000, ""),
			wantCode: 1000,
		},
		{
			name:       "UTF-8 reason",
			payload:    withCode(1001, "κόσμε 🚀"),
			wantCode:   1001,
			wantReason: "κόσμε 🚀",
		},
		{
			name:       "reason of 123 bytes, the most a control frame holds",
			payload:    withCode(4000, strings.Repeat("r", 123)),
			wantCode:   4000,
			wantReason: strings.Repeat("r", 123),
		},
		{
			name:    "invalid byte in reason",
			payload: withCode(1000, "bye\xff"),
			wantErr: ErrInvalidCloseReason,
		},
		{
			name:    "surrogate in reason",
			payload: withCode(1000, "\xed\xa0\x80"),
			wantErr: ErrInvalidCloseReason,
		},
		{
			name:    "reason ending inside a code point",
			payload: withCode(1000, "\xce\xba\xce"),
			wantErr: ErrInvalidCloseReason,
		},
	}
	valid := []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999}
	invalid := []uint16{0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535}
	for _, c := range valid {
		tests = append(tests, row{
			name:       fmt.Sprintf("code %d", c),
			payload:    withCode(c, "bye"),
			wantCode:   ws.StatusCode(c),
			wantReason: "bye",
		})
	}
	for _, c := range invalid {
		tests = append(tests, row{
			name:    fmt.Sprintf("code %d", c),
			payload: withCode(c, "bye"),
			wantErr: ErrInvalidCloseCode,
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, err := ParseClose(tc.payload)
			wantCloseError(t, "ParseClose", err, tc.wantErr)
			if code != tc.wantCode || string(reason) != tc.wantReason {
				t.Fatalf(
					"ParseClose = %d, %q; want %d, %q",
					code, reason, tc.wantCode, tc.wantReason)
			}
		})
	}
}

// TestValidCloseCodeAutobahn checks the lists of Autobahn cases 7.7.x (codes
// a server must accept) and 7.9.x (codes it must reject with 1002).
func TestValidCloseCodeAutobahn(t *testing.T) {
	for _, c := range []ws.StatusCode{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		if !ValidCloseCode(c) {
			t.Errorf(
				"7.7.x: code %d rejected",
				c)
		}
	}
	// The current list, and the one Autobahn's Docker image runs (which adds
	// 1014 and 1015).
	for _, c := range []ws.StatusCode{0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 1100, 2000, 2999} {
		if ValidCloseCode(c) {
			t.Errorf(
				"7.9.x: code %d accepted",
				c)
		}
	}
}

// TestValidCloseCodeEverywhere checks all 65536 codes against the RFC 6455
// codes for use in close frames, plus the two ranges left to libraries
// (3000-3999) and applications (4000-4999). The IANA registry's later
// 1012-1014 are refused on purpose (see ValidCloseCode).
func TestValidCloseCodeEverywhere(t *testing.T) {
	registered := map[ws.StatusCode]bool{
		1000: true, // normal closure
		1001: true, // going away
		1002: true, // protocol error
		1003: true, // unsupported data
		1007: true, // invalid frame payload data
		1008: true, // policy violation
		1009: true, // message too big
		1010: true, // mandatory extension
		1011: true, // internal error
	}
	for c := range 1 << 16 {
		code := ws.StatusCode(c)
		want := registered[code] || (c >= 3000 && c <= 4999)
		if got := ValidCloseCode(code); got != want {
			t.Errorf(
				"ValidCloseCode(%d) = %v, want %v",
				c, got, want)
		}
	}
}

func TestAppendClose(t *testing.T) {
	tests := []struct {
		name       string
		code       ws.StatusCode
		reason     string
		wantReason string
	}{
		{
			name:       "no code sends an empty close, whatever the reason",
			code:       0,
			reason:     "ignored",
			wantReason: "",
		},
		{
			name:       "code only",
			code:       1000,
			wantReason: "",
		},
		{
			name:       "short reason kept",
			code:       1001,
			reason:     "server shutting down",
			wantReason: "server shutting down",
		},
		{
			name:       "123-byte reason fits exactly",
			code:       1008,
			reason:     strings.Repeat("x", 123),
			wantReason: strings.Repeat("x", 123),
		},
		{
			name:       "124-byte ASCII reason cut to 123",
			code:       1008,
			reason:     strings.Repeat("x", 124),
			wantReason: strings.Repeat("x", 123),
		},
		{
			name:       "long ASCII reason cut to 123",
			code:       1011,
			reason:     strings.Repeat("0123456789", 30),
			wantReason: strings.Repeat("0123456789", 12) + "012",
		},
		{
			name:       "2-byte code point straddling the limit is dropped whole",
			code:       1008,
			reason:     strings.Repeat("x", 122) + "é",
			wantReason: strings.Repeat("x", 122),
		},
		{
			name:       "2-byte code point ending exactly at the limit is kept",
			code:       1008,
			reason:     strings.Repeat("x", 121) + "é" + "tail",
			wantReason: strings.Repeat("x", 121) + "é",
		},
		{
			name:       "3-byte code point straddling the limit is dropped whole",
			code:       1008,
			reason:     strings.Repeat("x", 121) + "€€",
			wantReason: strings.Repeat("x", 121),
		},
		{
			name:       "4-byte code points only",
			code:       4000,
			reason:     strings.Repeat("🚀", 31), // 124 bytes
			wantReason: strings.Repeat("🚀", 30),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("earlier frames")
			out := AppendClose(bytes.Clone(prefix), tc.code, tc.reason)
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf(
					"AppendClose overwrote dst: %q",
					out)
			}
			frame := out[len(prefix):]
			h, n, err := ParseHeader(frame)
			if err != nil || n == 0 {
				t.Fatalf(
					"ParseHeader of close frame % x: n = %d, err = %v",
					frame, n, err)
			}
			payload := frame[n:]
			if !h.Fin || h.OpCode != ws.OpClose || h.Masked || h.Rsv != 0 || h.Length != int64(len(payload)) {
				t.Fatalf(
					"close frame header %+v with %d payload bytes",
					h, len(payload))
			}
			if len(payload) > ws.MaxControlFramePayloadSize {
				t.Fatalf(
					"close payload of %d bytes, over the control frame limit",
					len(payload))
			}
			code, reason, err := ParseClose(payload)
			if err != nil || code != tc.code || string(reason) != tc.wantReason {
				t.Fatalf(
					"ParseClose(AppendClose) = %d, %q, %v; want %d, %q",
					code, reason, err, tc.code, tc.wantReason)
			}
			if !utf8.Valid(reason) {
				t.Fatalf(
					"reason %q is not valid UTF-8",
					reason)
			}
			// The client's view: an independent reader sees the same frame.
			f, err := ws.ReadFrame(bytes.NewReader(frame))
			if err != nil || f.Header != h || !bytes.Equal(f.Payload, payload) {
				t.Fatalf(
					"gobwas ReadFrame = %+v, %v",
					f, err)
			}
		})
	}
}

// TestAppendFrameRoundTrip encodes frames at each length-encoding boundary
// and reads them back with ParseHeader and with gobwas's reader, which shares
// no code with AppendHeader.
func TestAppendFrameRoundTrip(t *testing.T) {
	tests := []struct {
		length     int
		headerSize int
	}{
		{length: 0, headerSize: 2},
		{length: 125, headerSize: 2},
		{length: 126, headerSize: 4},
		{length: 65535, headerSize: 4},
		{length: 65536, headerSize: 10},
		{length: 1 << 20, headerSize: 10},
	}
	for _, tc := range tests {
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			t.Run(fmt.Sprintf("%d bytes %v", tc.length, op), func(t *testing.T) {
				payload := bytes.Repeat([]byte("0123456789abcdef"), tc.length/16+1)[:tc.length]
				prefix := []byte{0xDE, 0xAD}
				out := AppendFrame(bytes.Clone(prefix), op, payload)
				if !bytes.Equal(out[:len(prefix)], prefix) {
					t.Fatalf(
						"AppendFrame overwrote dst")
				}
				frame := out[len(prefix):]
				want := ws.Header{Fin: true, OpCode: op, Length: int64(tc.length)}

				h, n, err := ParseHeader(frame)
				if err != nil || h != want || n != tc.headerSize {
					t.Fatalf(
						"ParseHeader = %+v, %d, %v; want %+v, %d",
						h, n, err, want, tc.headerSize)
				}
				if !bytes.Equal(frame[n:], payload) {
					t.Fatalf(
						"payload after the header differs")
				}

				r := bytes.NewReader(frame)
				f, err := ws.ReadFrame(r)
				if err != nil || f.Header != want || !bytes.Equal(f.Payload, payload) {
					t.Fatalf(
						"gobwas ReadFrame: header %+v, %d payload bytes, %v",
						f.Header, len(f.Payload), err)
				}
				if r.Len() != 0 {
					t.Fatalf(
						"%d bytes left after the frame",
						r.Len())
				}
			})
		}
	}
}

// TestAppendHeader covers the header on its own, for non-final frames and
// every opcode a server sends, at the length-encoding boundaries.
func TestAppendHeader(t *testing.T) {
	ops := []ws.OpCode{ws.OpContinuation, ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong}
	for _, op := range ops {
		for _, fin := range []bool{true, false} {
			for _, length := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20, 1 << 40} {
				want := ws.Header{Fin: fin, OpCode: op, Length: int64(length)}
				hdr := AppendHeader(nil, op, fin, length)
				h, n, err := ParseHeader(hdr)
				if err != nil || n != len(hdr) || h != want {
					t.Errorf(
						"AppendHeader(%v, %v, %d) = % x: parsed %+v, n %d, %v",
						op, fin, length, hdr, h, n, err)
					continue
				}
				if size := ws.HeaderSize(want); len(hdr) != size {
					t.Errorf(
						"AppendHeader(%v, %v, %d) is %d bytes, want the minimal %d",
						op, fin, length, len(hdr), size)
				}
				gh, err := ws.ReadHeader(bytes.NewReader(hdr))
				if err != nil || gh != want {
					t.Errorf(
						"gobwas ReadHeader(% x) = %+v, %v",
						hdr, gh, err)
				}
			}
		}
	}
}

// TestHotPathsDoNotAllocate makes the benchmarks' 0 allocs/op a test, so that
// a regression fails go test rather than waiting for someone to read numbers.
func TestHotPathsDoNotAllocate(t *testing.T) {
	frame := maskedFrame(ws.OpText, bytes.Repeat([]byte("κόσμε "), 400))
	work := make([]byte, len(frame))
	dst := make([]byte, 0, 256)
	payload := make([]byte, 64)
	var d Decoder
	tests := []struct {
		name string
		fn   func()
	}{
		{
			name: "parse and unmask",
			fn: func() {
				copy(work, frame)
				if _, err := parseUnmask(&d, work); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "AppendFrame",
			fn:   func() { dst = AppendFrame(dst[:0], ws.OpText, payload) },
		},
		{
			name: "AppendClose",
			fn:   func() { dst = AppendClose(dst[:0], 1001, "going away") },
		},
		{
			name: "ParseClose",
			fn: func() {
				if _, _, err := ParseClose([]byte{0x03, 0xE8, 'o', 'k'}); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tc := range tests {
		if allocs := testing.AllocsPerRun(100, tc.fn); allocs != 0 {
			t.Errorf(
				"%s: %v allocations per run, want 0",
				tc.name, allocs)
		}
	}
}

// maskedFrame builds a final client frame the way a browser would, with
// gobwas's writer and the byte-by-byte mask.
func maskedFrame(op ws.OpCode, payload []byte) []byte {
	var buf bytes.Buffer
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: testMask, Length: int64(len(payload))}
	if err := ws.WriteHeader(&buf, h); err != nil {
		panic(err)
	}
	buf.Write(xorMask(payload, testMask))
	return buf.Bytes()
}

// parseUnmask is the engine's path for one whole data frame in its read
// buffer.
func parseUnmask(d *Decoder, b []byte) (ws.OpCode, error) {
	h, n, err := ParseHeader(b)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, errors.New("short frame")
	}
	if err := CheckClientHeader(h, 0); err != nil {
		return 0, err
	}
	if err := d.Begin(h, DefaultMaxMessageSize); err != nil {
		return 0, err
	}
	if err := d.Payload(b[n : n+int(h.Length)]); err != nil {
		return 0, err
	}
	return d.End()
}

func BenchmarkParseUnmask(b *testing.B) {
	textPayload := bytes.Repeat([]byte("price: 10\u20ac "), 6)[:64]
	if !utf8.Valid(textPayload) {
		panic("benchmark setup: text payload cut inside a code point")
	}
	binaryPayload := make([]byte, 4<<10)
	for i := range binaryPayload {
		binaryPayload[i] = byte(i)
	}
	for _, bc := range []struct {
		name    string
		op      ws.OpCode
		payload []byte
	}{
		{name: "text-64B", op: ws.OpText, payload: textPayload},
		{name: "binary-4KiB", op: ws.OpBinary, payload: binaryPayload},
	} {
		b.Run(bc.name, func(b *testing.B) {
			frame := maskedFrame(bc.op, bc.payload)
			// Unmasking is in place, so each round starts from a fresh copy
			// of the masked frame, as the engine's read buffer would be
			// refilled by the socket; the copy is part of the figure.
			work := make([]byte, len(frame))
			var d Decoder
			b.SetBytes(int64(len(bc.payload)))
			b.ReportAllocs()
			for b.Loop() {
				copy(work, frame)
				if op, err := parseUnmask(&d, work); op != bc.op || err != nil {
					b.Fatalf(
						"parseUnmask = %v, %v",
						op, err)
				}
			}
		})
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 64)
	dst := make([]byte, 0, 128)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendFrame(dst[:0], ws.OpText, payload)
	}
	if len(dst) != 2+len(payload) {
		b.Fatalf(
			"frame of %d bytes",
			len(dst))
	}
}
