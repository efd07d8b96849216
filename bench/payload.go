package bench

import (
	"bytes"
	"strconv"
)

// The payload the fanout scenario publishes is a fixed-layout JSON object:
//
//	{"seq":17,"ts":1732180000000123,"pad":"xxxxxxxxxxxx"}
//
// seq counts messages on one channel from 1 (0 marks a warm-up message
// that is not measured), ts is the publish time in Unix microseconds, and
// pad brings the payload to the requested size. Being JSON, it travels
// inside Herald's default {"channel":..,"data":..} envelope unchanged, and
// the receiver finds it by scanning for its first key rather than decoding
// the envelope: a scan over a hundred bytes costs far less than
// encoding/json, which matters because the client shares the CPU with the
// server it measures.
const (
	payloadSeqKey = `{"seq":`
	payloadTSKey  = `,"ts":`
	payloadPadKey = `,"pad":"`
	payloadEnd    = `"}`
)

// payloadOverhead is the length of a payload with one-digit numbers and no
// padding, less those two digits.
const payloadOverhead = len(payloadSeqKey) + len(payloadTSKey) + len(payloadPadKey) + len(payloadEnd)

// tsDigits is how many digits a Unix time in microseconds has until 2286.
const tsDigits = 16

// MinPayloadSize is the smallest payload that can carry sequence numbers
// up to maxSeq: smaller sizes cannot be honoured.
func MinPayloadSize(maxSeq uint64) int {
	return payloadOverhead + digits(maxSeq) + tsDigits
}

// AppendPayload appends the payload for message seq sent at ts (Unix
// microseconds) to dst, padded to size bytes when size allows.
func AppendPayload(dst []byte, seq uint64, ts int64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadSeqKey...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, payloadTSKey...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, payloadPadKey...)
	for pad := size - (len(dst) - start) - len(payloadEnd); pad > 0; pad-- {
		dst = append(dst, 'x')
	}
	return append(dst, payloadEnd...)
}

// ParsePayload finds a bench payload in p, bare or inside an envelope,
// and returns its sequence number and send time. ok is false when p holds
// none, as with the server's own {"op":...} messages. It does not
// allocate.
func ParsePayload(p []byte) (seq uint64, ts int64, ok bool) {
	i := bytes.Index(p, []byte(payloadSeqKey))
	if i < 0 {
		return 0, 0, false
	}
	p = p[i+len(payloadSeqKey):]
	seq, n := parseUint(p)
	if n == 0 {
		return 0, 0, false
	}
	p = p[n:]
	if !bytes.HasPrefix(p, []byte(payloadTSKey)) {
		return 0, 0, false
	}
	p = p[len(payloadTSKey):]
	t, n := parseUint(p)
	if n == 0 || t > 1<<62 {
		return 0, 0, false
	}
	return seq, int64(t), true
}

// parseUint reads the decimal digits at the start of p. n is 0 when there
// are none or they overflow 63 bits.
func parseUint(p []byte) (v uint64, n int) {
	for n < len(p) && '0' <= p[n] && p[n] <= '9' {
		if v > (1<<63-1)/10 {
			return 0, 0
		}
		v = v*10 + uint64(p[n]-'0')
		n++
	}
	return v, n
}

func digits(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// envelopeSeqKey precedes a history channel's sequence in Herald's
// envelope: {"channel":"c","seq":1234,"data":...}.
const envelopeSeqKey = `","seq":`

// envelopeSeq finds the stream sequence in an envelope of a history
// channel. It looks only before "data", where Herald puts it, so that a
// payload's own fields are never taken for it. It does not allocate.
func envelopeSeq(p []byte) (uint64, bool) {
	head := p
	if i := bytes.Index(p, []byte(`,"data":`)); i >= 0 {
		head = p[:i]
	}
	i := bytes.Index(head, []byte(envelopeSeqKey))
	if i < 0 {
		return 0, false
	}
	v, n := parseUint(head[i+len(envelopeSeqKey):])
	return v, n > 0
}
