package codec

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// fuzzEngine drives the codec over one connection the way Herald's engine
// does: bytes arrive in pieces of any size; a header is parsed once it has
// all arrived; a data frame's payload goes to the Decoder in whatever pieces
// are there; a control frame waits until it has arrived whole. It records what
// the connection would have seen, and checks the codec against independent
// oracles on the way.
type fuzzEngine struct {
	t          *testing.T
	maxSize    int64
	allowedRsv byte

	dec       Decoder
	buf       []byte // received, not yet consumed
	inPayload bool   // the current data frame still has payload to come
	msg       []byte // the message being reassembled, unmasked

	// The verdict.
	events []string // completed messages and control frames, in order
	err    error    // the error that would close the connection
	closed bool     // a valid close frame arrived: reading stops
}

// verdict returns everything that must not depend on how the stream was cut.
func (e *fuzzEngine) verdict() string {
	v := fmt.Sprintf("events %q\nerr %v\nclosed %v\n", e.events, e.err, e.closed)
	if e.err == nil && !e.closed {
		// Where the stream stopped: inside a header or control frame (bytes
		// left over), inside a data frame (payload remaining), inside a
		// fragmented message (what has been reassembled so far). After an
		// error or a close nothing more is read, so how much else arrived
		// depends on the chunking and is not part of the verdict.
		v += fmt.Sprintf(
			"leftover % x\nin payload %v, remaining %d\npartial %q\n",
			e.buf, e.inPayload, e.dec.Remaining(), e.msg)
	}
	return v
}

// receive handles one read from the socket.
func (e *fuzzEngine) receive(chunk []byte) {
	if e.err != nil || e.closed {
		return
	}
	e.buf = append(e.buf, chunk...)
	// Every step consumes at least one byte or returns false, so more steps
	// than buffered bytes means the loop no longer progresses.
	limit := len(e.buf) + 1
	for steps := 0; e.step(); steps++ {
		if steps > limit {
			e.t.Fatalf(
				"%d steps on %d buffered bytes: the engine loop does not progress",
				steps, limit-1)
		}
		if e.err != nil || e.closed {
			return
		}
	}
}

func (e *fuzzEngine) fail(err error) { e.err = err }

// step does one unit of work and reports whether it did any.
func (e *fuzzEngine) step() bool {
	if e.inPayload {
		n := int(min(int64(len(e.buf)), e.dec.Remaining()))
		if n == 0 {
			return false
		}
		p := e.buf[:n]
		before := e.dec.Remaining()
		err := e.dec.Payload(p)
		e.msg = append(e.msg, p...)
		e.buf = e.buf[n:]
		if r := e.dec.Remaining(); r < 0 || r != before-int64(n) {
			e.t.Fatalf(
				"Remaining went from %d to %d over %d bytes",
				before, r, n)
		}
		if err != nil {
			e.checkUTF8Failure(err, n)
			e.fail(err)
			return true
		}
		if e.dec.Remaining() == 0 {
			e.endFrame()
		}
		return true
	}

	h, n, err := ParseHeader(e.buf)
	if err != nil {
		// Only the 64-bit length's top bit is an encoding error.
		if err != ErrLengthOverflow || len(e.buf) < 10 || e.buf[1]&0x7F != 127 || e.buf[2]&0x80 == 0 {
			e.t.Fatalf(
				"ParseHeader(% x) error %v",
				e.buf[:min(len(e.buf), MaxHeaderSize)], err)
		}
		e.fail(err)
		return true
	}
	if n == 0 {
		if len(e.buf) >= MaxHeaderSize {
			e.t.Fatalf(
				"ParseHeader needs more than %d bytes: % x",
				MaxHeaderSize, e.buf[:MaxHeaderSize])
		}
		return false
	}
	gh, gerr := ws.ReadHeader(bytes.NewReader(e.buf[:n]))
	if gerr != nil || gh != h {
		e.t.Fatalf(
			"ParseHeader(% x) = %+v, gobwas reads %+v, %v",
			e.buf[:n], h, gh, gerr)
	}

	inMessage := e.dec.InMessage()
	checkErr := CheckClientHeader(h, e.allowedRsv)
	var beginErr error
	if checkErr == nil && !h.OpCode.IsControl() {
		beginErr = e.dec.Begin(h, e.maxSize)
	}
	e.compareWithGobwas(h, inMessage, checkErr, beginErr)
	switch {
	case checkErr != nil:
		e.fail(checkErr)
		return true
	case beginErr != nil:
		e.fail(beginErr)
		return true
	}

	if h.OpCode.IsControl() {
		if int64(len(e.buf)-n) < h.Length {
			return false // control frames are handled whole
		}
		p := e.buf[n : n+int(h.Length)]
		ws.Cipher(p, h.Mask, 0)
		e.buf = e.buf[n+len(p):]
		e.control(h.OpCode, p)
		return true
	}

	e.buf = e.buf[n:]
	e.inPayload = true
	if e.dec.Remaining() != h.Length || e.dec.Size() > e.maxSize {
		e.t.Fatalf(
			"after Begin(%+v, %d): Remaining %d, Size %d",
			h, e.maxSize, e.dec.Remaining(), e.dec.Size())
	}
	if h.Length == 0 {
		e.endFrame()
	}
	return true
}

func (e *fuzzEngine) endFrame() {
	e.inPayload = false
	op, err := e.dec.End()
	if err != nil {
		// Only a text message cut inside a code point fails here, and
		// only if no earlier byte made it invalid.
		if err != ErrInvalidUTF8 || firstImpossibleByte(e.msg) >= 0 || utf8.Valid(e.msg) {
			e.t.Fatalf(
				"End error %v on message %q",
				err, e.msg)
		}
		e.fail(err)
		return
	}
	if op == 0 {
		return
	}
	if op == ws.OpText && !utf8.Valid(e.msg) {
		e.t.Fatalf(
			"invalid text message %q accepted",
			e.msg)
	}
	if int64(len(e.msg)) > e.maxSize {
		e.t.Fatalf(
			"message of %d bytes accepted under a limit of %d",
			len(e.msg), e.maxSize)
	}
	e.events = append(e.events, fmt.Sprintf("%v % x", op, e.msg))
	e.msg = e.msg[:0]
}

// checkUTF8Failure checks a Payload error: it must be invalid UTF-8 in a text
// message, and the first impossible byte must be in the piece just fed (fed
// earlier means detection came late; not fed yet means a false alarm).
func (e *fuzzEngine) checkUTF8Failure(err error, pieceLen int) {
	bad := firstImpossibleByte(e.msg)
	start := len(e.msg) - pieceLen
	if err != ErrInvalidUTF8 || bad < start {
		e.t.Fatalf(
			"Payload error %v: message %q, first impossible byte %d, piece starts at %d",
			err, e.msg, bad, start)
	}
}

func (e *fuzzEngine) control(op ws.OpCode, p []byte) {
	switch op {
	case ws.OpClose:
		code, reason, err := ParseClose(p)
		if err != nil {
			e.fail(err)
			return
		}
		e.events = append(e.events, fmt.Sprintf("close %d %q", code, reason))
		e.closed = true
	default:
		e.events = append(e.events, fmt.Sprintf("%v % x", op, p))
	}
}

// compareWithGobwas checks the frame-level verdict (header rules and
// continuation sequencing, not the size limit, which gobwas leaves to the
// caller) against ws.CheckHeader, written independently. inMessage is the
// Decoder's state before the frame.
func (e *fuzzEngine) compareWithGobwas(h ws.Header, inMessage bool, checkErr, beginErr error) {
	if beginErr == ErrMessageTooBig {
		return
	}
	if e.allowedRsv != 0 && h.Rsv&^e.allowedRsv != 0 {
		return // gobwas allows all three bits or none
	}
	state := ws.StateServerSide
	if inMessage {
		state |= ws.StateFragmented
	}
	if e.allowedRsv != 0 {
		state |= ws.StateExtended
	}
	ours := checkErr != nil || beginErr != nil
	theirs := ws.CheckHeader(h, state)
	if ours != (theirs != nil) {
		e.t.Fatalf(
			"header %+v in state %v: ours %v / %v, gobwas %v",
			h, state, checkErr, beginErr, theirs)
	}
}

// fuzzLimits are the message size limits the fuzzer picks from: 0 and 1 make
// every non-empty message too big, 16 and 125 are reached by small inputs.
var fuzzLimits = []int64{0, 1, 16, 125, 4096, DefaultMaxMessageSize}

// fuzzRsv are the reserved-bit sets an extension might have negotiated.
var fuzzRsv = []byte{0, ws.Rsv(true, false, false), ws.Rsv(true, true, true)}

// runFuzzEngine passes stream to a new engine in pieces of the sizes chunks
// returns (given how much is left), then checks the end state.
func runFuzzEngine(t *testing.T, stream []byte, maxSize int64, allowedRsv byte, chunks func(remaining int) int) *fuzzEngine {
	e := &fuzzEngine{t: t, maxSize: maxSize, allowedRsv: allowedRsv}
	// The engine unmasks in place in its own buffer, never in the caller's.
	stream = bytes.Clone(stream)
	for len(stream) > 0 {
		n := max(1, min(chunks(len(stream)), len(stream)))
		e.receive(stream[:n])
		stream = stream[n:]
	}
	if e.err == nil && e.dec.InMessage() && e.dec.op == ws.OpText && firstImpossibleByte(e.msg) >= 0 {
		t.Fatalf(
			"stream ended inside a text message %q that cannot be valid, without an error",
			e.msg)
	}
	return e
}

// FuzzDecoder feeds arbitrary bytes as a client's frame stream, whole, one
// byte at a time and in random pieces, and requires the same verdict every
// time: what TCP does to the stream must not change what the server decides.
// seed picks the size limit, the allowed reserved bits and the pieces.
func FuzzDecoder(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		maxSize := fuzzLimits[seed%uint64(len(fuzzLimits))]
		allowedRsv := fuzzRsv[(seed/uint64(len(fuzzLimits)))%uint64(len(fuzzRsv))]
		rng := rand.New(rand.NewPCG(seed, 0x6865_7261_6c64))

		whole := runFuzzEngine(t, stream, maxSize, allowedRsv, func(n int) int { return n }).verdict()
		bytewise := runFuzzEngine(t, stream, maxSize, allowedRsv, func(int) int { return 1 }).verdict()
		random := runFuzzEngine(t, stream, maxSize, allowedRsv, func(n int) int {
			if rng.IntN(4) == 0 {
				return rng.IntN(n + 1)
			}
			return 1 + rng.IntN(16)
		}).verdict()
		if whole != bytewise || whole != random {
			t.Fatalf(
				"verdict depends on chunking:\nwhole:\n%s\nbyte at a time:\n%s\nrandom:\n%s",
				whole, bytewise, random)
		}
	})
}

// TestEngineLoop checks the fuzz driver's verdicts on streams whose outcome
// is known, which is also what shows the driver can tell right from wrong,
// and covers the rules that live between frames: control frames between
// fragments, nothing read after a close.
func TestEngineLoop(t *testing.T) {
	frame := func(fin bool, op ws.OpCode, payload string) []byte {
		var buf bytes.Buffer
		h := ws.Header{Fin: fin, OpCode: op, Masked: true, Mask: testMask, Length: int64(len(payload))}
		if err := ws.WriteHeader(&buf, h); err != nil {
			t.Fatal(err)
		}
		buf.Write(xorMask([]byte(payload), testMask))
		return buf.Bytes()
	}
	stream := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name       string
		stream     []byte
		wantEvents []string
		wantErr    *CloseError
		wantClosed bool
	}{
		{
			name: "ping between the fragments of a text message",
			stream: stream(
				frame(false, ws.OpText, "push \xf0\x9f"),
				frame(true, ws.OpPing, "hb"),
				frame(true, ws.OpContinuation, "\x9a\x80"),
			),
			wantEvents: []string{"9 68 62", "1 70 75 73 68 20 f0 9f 9a 80"},
		},
		{
			name: "close between fragments ends reading",
			stream: stream(
				frame(false, ws.OpBinary, "ab"),
				frame(true, ws.OpClose, "\x03\xe8"),
				frame(true, ws.OpContinuation, "\xff"),
				frame(true, ws.OpText, "\xff"),
			),
			wantEvents: []string{"close 1000 \"\""},
			wantClosed: true,
		},
		{
			name: "messages before an error are delivered",
			stream: stream(
				frame(true, ws.OpText, "a"),
				frame(true, ws.OpPong, ""),
				frame(true, 0x3, ""),
			),
			wantEvents: []string{"1 61", "10 "},
			wantErr:    ErrReservedOpcode,
		},
		{
			name: "invalid UTF-8 fails before the rest of the frame arrives",
			stream: stream(
				frame(true, ws.OpText, "ok\xc0\x80 and more"),
			)[:2+4+3],
			wantErr: ErrInvalidUTF8,
		},
		{
			name: "a control frame waits until it has arrived whole",
			stream: stream(
				frame(true, ws.OpPing, "12345"),
			)[:2+4+4],
		},
	}
	for _, tc := range tests {
		for _, chunk := range []int{1, 3, 1 << 20} {
			t.Run(fmt.Sprintf("%s/chunks of %d", tc.name, chunk), func(t *testing.T) {
				e := runFuzzEngine(t, tc.stream, DefaultMaxMessageSize, 0, func(int) int { return chunk })
				if fmt.Sprint(e.events) != fmt.Sprint(tc.wantEvents) {
					t.Fatalf(
						"events %q, want %q",
						e.events, tc.wantEvents)
				}
				wantCloseError(t, "engine", e.err, tc.wantErr)
				if e.closed != tc.wantClosed {
					t.Fatalf(
						"closed = %v, want %v",
						e.closed, tc.wantClosed)
				}
			})
		}
	}
}

// FuzzUTF8 cuts arbitrary bytes into random pieces: the validator must agree
// with utf8.Valid on the whole, and fail with the piece holding the first
// impossible byte.
func FuzzUTF8(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		var cuts []int
		for i := 0; i < len(data); {
			i += rng.IntN(6)
			cuts = append(cuts, min(i, len(data)))
			i++
		}
		checkPieces(t, data, splitAt(data, cuts...))
		checkPieces(t, data, [][]byte{data})
	})
}

// FuzzAppendClose: whatever reason the server passes, the close frame must
// fit a control frame, and a valid reason must stay valid and only be cut.
func FuzzAppendClose(f *testing.F) {
	f.Add(uint16(1000), "")
	f.Add(uint16(1001), strings.Repeat("é", 70))
	f.Add(uint16(4000), strings.Repeat("🚀", 40))
	f.Add(uint16(1011), "\xff"+strings.Repeat("x", 200))
	f.Fuzz(func(t *testing.T, code uint16, reason string) {
		frame := AppendClose(nil, ws.StatusCode(code), reason)
		h, n, err := ParseHeader(frame)
		if err != nil || n == 0 || h.OpCode != ws.OpClose || !h.Fin || h.Masked || int64(len(frame)-n) != h.Length {
			t.Fatalf(
				"close frame % x: header %+v, n %d, %v",
				frame, h, n, err)
		}
		payload := frame[n:]
		if h.Length > ws.MaxControlFramePayloadSize {
			t.Fatalf(
				"close payload of %d bytes",
				h.Length)
		}
		if code == 0 {
			if len(payload) != 0 {
				t.Fatalf(
					"code 0 must send an empty close, got % x",
					payload)
			}
			return
		}
		got := string(payload[2:])
		if !strings.HasPrefix(reason, got) || uint16(payload[0])<<8|uint16(payload[1]) != code {
			t.Fatalf(
				"AppendClose(%d, %q) sent % x",
				code, reason, payload)
		}
		if utf8.ValidString(reason) && !utf8.ValidString(got) {
			t.Fatalf(
				"valid reason %q cut into invalid %q",
				reason, got)
		}
		// Cutting must keep as much as fits: one more code point would not.
		if len(got) < len(reason) && utf8.ValidString(reason) {
			_, size := utf8.DecodeRuneInString(reason[len(got):])
			if len(got)+size <= ws.MaxControlFramePayloadSize-2 {
				t.Fatalf(
					"reason cut to %d bytes though the next code point fits",
					len(got))
			}
		}
	})
}
