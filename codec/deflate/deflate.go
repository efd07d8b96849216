// Package deflate is the data path of permessage-deflate (RFC 7692) with no
// context takeover: it compresses one message into a server frame with RSV1
// set, once, so that the same bytes can go to every socket that negotiated
// the extension, and inflates a client's compressed message without ever
// producing more than a limit. Negotiation is codec.NegotiateDeflate's.
//
// A Compressor or an Inflater is scratch state for one goroutine (an event
// loop, the hub's encoder): nothing here belongs to a connection, which is
// what keeps an idle deflate connection as cheap as a plain one.
package deflate

import (
	"errors"
	"io"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"

	"github.com/herald-ws/herald/codec"
)

// DefaultLevel is the compression level Herald uses unless told otherwise:
// the fastest, since a push server compresses every message it sends and
// JSON compresses well even at level 1.
const DefaultLevel = flate.BestSpeed

// Levels a Compressor accepts: flate.HuffmanOnly (-2) and 1 to 9.
const (
	MinLevel = flate.HuffmanOnly
	MaxLevel = flate.BestCompression
)

// syncTail is the empty stored block a sync flush ends with; RFC 7692
// section 7.2.1 drops it from every message on the wire.
var syncTail = [4]byte{0x00, 0x00, 0xff, 0xff}

// Compressor compresses whole messages, each on its own (no context
// takeover), with an LZ77 window of 2^WindowBits bytes.
type Compressor struct {
	w       *flate.Writer
	out     sink
	bits    uint8
	scratch []byte
}

// sink is the io.Writer a flate.Writer appends its output to.
type sink struct{ b []byte }

func (s *sink) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// NewCompressor returns a Compressor at level (0 means DefaultLevel) for a
// window of 2^windowBits bytes, 8 to 15, as negotiated. Windows below 15 use
// klauspost's custom-window encoder, which has a single level.
func NewCompressor(level int, windowBits uint8) (*Compressor, error) {
	if level == 0 {
		level = DefaultLevel
	}
	if windowBits < 8 || windowBits > 15 {
		return nil, errors.New("deflate: window bits must be 8 to 15")
	}
	if level != flate.HuffmanOnly && (level < 1 || level > MaxLevel) {
		return nil, errors.New("deflate: level must be -2 (Huffman only) or 1 to 9")
	}
	c := &Compressor{bits: windowBits}
	var err error
	if windowBits == 15 {
		c.w, err = flate.NewWriter(&c.out, level)
	} else {
		c.w, err = flate.NewWriterWindow(&c.out, 1<<windowBits)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// WindowBits is the window the Compressor was made for.
func (c *Compressor) WindowBits() uint8 { return c.bits }

// Compress appends payload compressed as one message, without the sync
// flush's trailing 00 00 ff ff, to dst.
func (c *Compressor) Compress(dst, payload []byte) []byte {
	c.out.b = dst
	c.w.Reset(&c.out)
	_, _ = c.w.Write(payload) // a sink never fails
	_ = c.w.Flush()
	b := c.out.b
	c.out.b = nil
	if n := len(b); n >= len(syncTail) && [4]byte(b[n-4:]) == syncTail {
		b = b[:n-4]
	}
	return b
}

// AppendFrame appends a whole server frame with RSV1 set carrying payload
// compressed. The frame may be written unchanged to every socket that
// negotiated permessage-deflate with at least this window.
func (c *Compressor) AppendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	c.scratch = c.Compress(c.scratch[:0], payload)
	at := len(dst)
	dst = codec.AppendHeader(dst, op, true, len(c.scratch))
	dst[at] |= rsv1
	dst = append(dst, c.scratch...)
	if cap(c.scratch) > 64<<10 {
		c.scratch = nil // one large message does not pin its size on the loop
	}
	return dst
}

// rsv1 is the RSV1 bit of a frame's first byte: "this message is
// compressed" (RFC 7692 section 6).
const rsv1 = 0x40

// ErrCorrupt closes a connection that sent compressed data that does not
// inflate (1007: the payload is not what the frame type says it is).
var ErrCorrupt = &codec.CloseError{Code: ws.StatusInvalidFramePayloadData, Reason: "invalid compressed data"}

// Inflater inflates compressed messages one at a time with a full 32 KiB
// window, which reads whatever window a client compressed with.
type Inflater struct {
	r   io.ReadCloser
	src source
}

// NewInflater returns an Inflater.
func NewInflater() *Inflater {
	f := &Inflater{}
	f.r = flate.NewReader(&f.src)
	return f
}

// Inflate appends the inflation of one message's compressed payload to
// dst. It stops as soon as the message passes limit bytes, having produced
// at most limit+1 of them, and returns codec.ErrMessageTooBig: a small
// frame that inflates to gigabytes (a zip bomb) costs no more than the
// limit. Data that is not valid deflate is ErrCorrupt.
func (f *Inflater) Inflate(dst, payload []byte, limit int64) ([]byte, error) {
	f.src = source{p: payload}
	if err := f.r.(flate.Resetter).Reset(&f.src, nil); err != nil {
		return dst, ErrCorrupt
	}
	start := len(dst)
	for {
		produced := int64(len(dst) - start)
		if produced > limit {
			f.src = source{}
			return dst, codec.ErrMessageTooBig
		}
		if len(dst) == cap(dst) {
			grow := max(int64(cap(dst)-start), 1024)
			grow = min(grow, limit+1-produced)
			dst = append(dst, make([]byte, grow)...)[:len(dst)]
		}
		room := dst[len(dst):cap(dst)]
		if left := limit + 1 - produced; int64(len(room)) > left {
			room = room[:left]
		}
		n, err := f.r.Read(room)
		dst = dst[:len(dst)+n]
		switch {
		case err == io.EOF:
			f.src = source{}
			if int64(len(dst)-start) > limit {
				return dst, codec.ErrMessageTooBig
			}
			return dst, nil
		case err != nil:
			f.src = source{}
			return dst, ErrCorrupt
		}
	}
}

// source reads a message's payload followed by the tail that makes it a
// complete deflate stream: the sync flush's 00 00 ff ff the sender dropped,
// then an empty final stored block, so that a whole message ends in EOF and
// a truncated one in an error (as gorilla/websocket does). It is an
// io.ByteReader, so flate reads it without a bufio.Reader of its own.
type source struct {
	p   []byte
	off int
}

var streamTail = [...]byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

func (s *source) Read(b []byte) (int, error) {
	n := 0
	if s.off < len(s.p) {
		n = copy(b, s.p[s.off:])
		s.off += n
	}
	if t := s.off - len(s.p); n < len(b) && t >= 0 && t < len(streamTail) {
		m := copy(b[n:], streamTail[t:])
		s.off += m
		n += m
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (s *source) ReadByte() (byte, error) {
	switch {
	case s.off < len(s.p):
		c := s.p[s.off]
		s.off++
		return c, nil
	case s.off < len(s.p)+len(streamTail):
		c := streamTail[s.off-len(s.p)]
		s.off++
		return c, nil
	}
	return 0, io.EOF
}
