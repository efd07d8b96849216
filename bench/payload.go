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
	// The padding is market-data text cut from filler at an offset that
	// moves with seq: it compresses as real JSON ticks do (two to three
	// times at 1 KiB), not as a run of one letter would.
	off := int(seq*97) % len(filler)
	for pad := size - (len(dst) - start) - len(payloadEnd); pad > 0; {
		n := min(pad, len(filler)-off)
		dst = append(dst, filler[off:off+n]...)
		pad -= n
		off = 0
	}
	return append(dst, payloadEnd...)
}

// filler is the padding's text: no quote or backslash, so it needs no
// escaping inside the pad string.
const filler = "AAPL bid 187.25 x 300 ask 187.27 x 200 last 187.26 vol 51234876 MSFT bid 415.02 x 100 ask 415.09 x 400 " +
	"last 415.05 vol 20874112 GOOG bid 172.61 x 900 ask 172.66 x 300 last 172.63 vol 18230967 AMZN bid 186.40 x 500 " +
	"ask 186.43 x 700 last 186.41 vol 33912450 NVDA bid 131.88 x 1200 ask 131.90 x 800 last 131.89 vol 241870333 " +
	"TSLA bid 248.12 x 60 ask 248.19 x 140 last 248.15 vol 98223104 META bid 562.75 x 220 ask 562.91 x 180 last " +
	"562.80 vol 11094825 venue XNAS seq 8812734 cond @ F T open 185.92 high 188.04 low 185.37 vwap 186.98 " +
	"halted false luld 177.89 196.62 ssr 0 tz America/New_York src SIP-UTP ts 1732180000123456 trade 4471 "

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
