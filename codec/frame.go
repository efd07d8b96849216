package codec

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// DefaultMaxMessageSize is the largest message a client may send when the
// caller sets no limit (1 MiB). Push clients send small commands; the limit is
// what stops one socket from making the server buffer without bound.
const DefaultMaxMessageSize = 1 << 20

// MaxHeaderSize is the length of the longest frame header: two fixed bytes,
// eight bytes of extended length and four bytes of mask.
const MaxHeaderSize = ws.MaxHeaderSize

// CloseError is a reason to close a WebSocket connection: the close code to
// send (RFC 6455 section 7.4) and a short reason for the close frame and logs.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket close %d: %s", e.Code, e.Reason)
}

// The protocol violations a client can commit. They are values, never
// mutated: the engine compares against them and writes them to the wire.
var (
	ErrReservedBits       = &CloseError{ws.StatusProtocolError, "reserved bits set without a negotiated extension"}
	ErrReservedOpcode     = &CloseError{ws.StatusProtocolError, "reserved opcode"}
	ErrUnmasked           = &CloseError{ws.StatusProtocolError, "client frame not masked"}
	ErrControlTooLong     = &CloseError{ws.StatusProtocolError, "control frame payload over 125 bytes"}
	ErrControlFragmented  = &CloseError{ws.StatusProtocolError, "fragmented control frame"}
	ErrLengthOverflow     = &CloseError{ws.StatusProtocolError, "frame length has the most significant bit set"}
	ErrUnexpectedContinue = &CloseError{ws.StatusProtocolError, "continuation frame without a message to continue"}
	ErrExpectedContinue   = &CloseError{ws.StatusProtocolError, "new data frame inside a fragmented message"}
	ErrMessageTooBig      = &CloseError{ws.StatusMessageTooBig, "message too big"}
	ErrInvalidUTF8        = &CloseError{ws.StatusInvalidFramePayloadData, "invalid UTF-8 in text message"}
	ErrCloseTooShort      = &CloseError{ws.StatusProtocolError, "close frame with a 1-byte payload"}
	ErrInvalidCloseCode   = &CloseError{ws.StatusProtocolError, "invalid close code"}
	ErrInvalidCloseReason = &CloseError{ws.StatusInvalidFramePayloadData, "close reason is not valid UTF-8"}
)

// ParseHeader decodes the frame header at the start of b without consuming
// anything. It returns the header and its length, or n == 0 and a nil error
// when b does not hold the whole header yet: needing more bytes is not an
// error. It checks only what the header's own encoding can get wrong; the
// rules about what a client may send are CheckClientHeader's.
func ParseHeader(b []byte) (h ws.Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 0x07
	h.OpCode = ws.OpCode(b[0] & 0x0F)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch length := b[1] & 0x7F; length {
	case 126:
		if len(b) < n+2 {
			return h, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[n:]))
		n += 2
	case 127:
		if len(b) < n+8 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(b[n:])
		if u>>63 != 0 {
			return h, 0, ErrLengthOverflow
		}
		h.Length = int64(u)
		n += 8
	default:
		h.Length = int64(length)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// CheckClientHeader applies the rules of RFC 6455 section 5 that a single
// frame from a client must follow on its own: masked, no reserved opcode, no
// reserved bits beyond those an extension negotiated (allowedRsv), and control
// frames short and unfragmented. Rules about a frame's place in a message are
// Decoder's.
func CheckClientHeader(h ws.Header, allowedRsv byte) error {
	switch {
	case h.Rsv&^allowedRsv != 0:
		return ErrReservedBits
	case h.OpCode.IsReserved():
		return ErrReservedOpcode
	case !h.Masked:
		return ErrUnmasked
	case h.OpCode.IsControl() && h.Length > ws.MaxControlFramePayloadSize:
		return ErrControlTooLong
	case h.OpCode.IsControl() && !h.Fin:
		return ErrControlFragmented
	}
	return nil
}

// Decoder follows one client's stream of data frames: it checks each frame's
// place in its message (continuations only inside a fragmented message, the
// message size under the limit), tracks the frame whose payload is arriving so
// that it may come in pieces of any size, unmasks those pieces in place and
// validates text as UTF-8 as it goes. It never holds payload bytes: where they
// go is the caller's business, which is what lets the engine unmask a whole
// frame inside its read buffer and reassemble only fragmented messages.
//
// Control frames do not pass through a Decoder: they may arrive between the
// fragments of a message without disturbing it, and are always short enough
// to be handled whole.
type Decoder struct {
	remaining int64   // payload bytes of the current frame not yet seen
	size      int64   // length of the current message, counting whole frames
	mask      [4]byte // the current frame's masking key
	offset    uint8   // position in the mask of the next payload byte
	fin       bool    // the current frame is the last of its message
	// compressed: the message's first frame had RSV1 set under
	// permessage-deflate, so its payload is deflate data, checked for
	// UTF-8 only once inflated.
	compressed bool
	op         ws.OpCode // opcode of the message in progress; 0 between messages
	text       UTF8      // validator of the message in progress when it is text
}

// Begin checks h, the header of the next data frame, against the message in
// progress and the size limit, and makes it the current frame. It must not be
// called while the current frame still has payload to come.
func (d *Decoder) Begin(h ws.Header, maxMessageSize int64) error {
	switch {
	case h.OpCode == ws.OpContinuation && d.op == 0:
		return ErrUnexpectedContinue
	case h.OpCode != ws.OpContinuation && d.op != 0:
		return ErrExpectedContinue
	case h.Length > maxMessageSize-d.size:
		return ErrMessageTooBig
	}
	if d.op == 0 {
		d.op = h.OpCode
		d.text.Reset()
		d.compressed = h.Rsv&RSV1 != 0
	}
	d.size += h.Length
	d.remaining = h.Length
	d.mask = h.Mask
	d.offset = 0
	d.fin = h.Fin
	return nil
}

// Payload unmasks p, the next bytes of the current frame's payload, in place
// and, in a text message, checks that the text so far can still be valid
// UTF-8. p must not be longer than Remaining.
func (d *Decoder) Payload(p []byte) error {
	ws.Cipher(p, d.mask, int(d.offset))
	d.offset = uint8((int(d.offset) + len(p)) & 3)
	d.remaining -= int64(len(p))
	if d.op == ws.OpText && !d.compressed && !d.text.Write(p) {
		return ErrInvalidUTF8
	}
	return nil
}

// RSV1 is the header's Rsv bit that permessage-deflate uses to mark a
// compressed message (RFC 7692 section 6), as ws.Header.Rsv holds it.
const RSV1 = 0x4

// Compressed reports whether the message in progress is compressed (its
// first frame had RSV1 set). Its payload is then deflate data: End does
// not check it for UTF-8, the inflated text must be.
func (d *Decoder) Compressed() bool { return d.compressed }

// Remaining reports how many payload bytes of the current frame are still to
// come.
func (d *Decoder) Remaining() int64 { return d.remaining }

// Size reports the length of the message in progress, counting the current
// frame's whole payload, so callers can size a reassembly buffer once.
func (d *Decoder) Size() int64 { return d.size }

// End is called once the current frame's payload has all passed through
// Payload. If that frame ends its message, End returns the message's opcode
// (text or binary) and readies the Decoder for the next message; otherwise it
// returns 0. A text message that stops inside a code point is invalid.
func (d *Decoder) End() (ws.OpCode, error) {
	if !d.fin {
		return 0, nil
	}
	op := d.op
	if op == ws.OpText && !d.compressed && !d.text.Complete() {
		return 0, ErrInvalidUTF8
	}
	*d = Decoder{}
	return op, nil
}

// InMessage reports whether a fragmented message has started and not ended.
func (d *Decoder) InMessage() bool { return d.op != 0 }

// ParseClose validates the payload of a close frame from a client (RFC 6455
// sections 5.5.1 and 7.4) and returns its code and reason. An empty payload is
// valid and has no code: code is then 0.
func ParseClose(p []byte) (code ws.StatusCode, reason []byte, err error) {
	switch {
	case len(p) == 0:
		return 0, nil, nil
	case len(p) == 1:
		return 0, nil, ErrCloseTooShort
	}
	code = ws.StatusCode(binary.BigEndian.Uint16(p))
	if !ValidCloseCode(code) {
		return 0, nil, ErrInvalidCloseCode
	}
	reason = p[2:]
	if !utf8.Valid(reason) {
		return 0, nil, ErrInvalidCloseReason
	}
	return code, reason, nil
}

// ValidCloseCode reports whether a peer may send code in a close frame:
// the codes RFC 6455 section 7.4.1 defines for use on the wire and the
// ranges left to libraries and applications (3000-4999). 1004, 1005, 1006
// and 1015 are reserved and never sent.
//
// 1012-1014, registered with IANA after the RFC, are refused too. Versions
// of the Autobahn suite disagree about them: its current case 7.9 lists
// none of them, but the release its published Docker image runs lists 1014
// (and 1015) among the invalid codes, and no version lists any of them
// among the valid ones (case 7.7). Refusing them passes every version, and
// a client has no need of them to close.
func ValidCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1011:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// AppendHeader appends the header of an unmasked server frame to dst.
func AppendHeader(dst []byte, op ws.OpCode, fin bool, length int) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	switch {
	case length <= 125:
		return append(dst, b0, byte(length))
	case length <= 0xFFFF:
		return append(dst, b0, 126, byte(length>>8), byte(length))
	}
	dst = append(dst, b0, 127)
	return binary.BigEndian.AppendUint64(dst, uint64(length))
}

// AppendFrame appends a whole unfragmented server frame carrying payload to
// dst. The result can be written unchanged to every socket that should get
// the message: this is how a broadcast is encoded once for all subscribers.
func AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	dst = AppendHeader(dst, op, true, len(payload))
	return append(dst, payload...)
}

// AppendClose appends a close frame with code and reason to dst. A zero code
// sends an empty close frame. The reason is cut to fit the 125-byte control
// frame limit, at a code point boundary so it stays valid UTF-8.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	if code == 0 {
		return append(dst, 0x80|byte(ws.OpClose), 0)
	}
	const maxReason = ws.MaxControlFramePayloadSize - 2
	if len(reason) > maxReason {
		cut := maxReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	dst = AppendHeader(dst, ws.OpClose, true, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}
