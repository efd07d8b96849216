package push

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// envelopeHeadroom is room left in front of an envelope for its frame
// header, the longest one a server frame can need.
const envelopeHeadroom = 10

// appendEnvelopeFrame encodes {"channel":subject,"data":payload} as a text
// frame in dst, or {"channel":subject,"seq":seq,"data":payload} for a
// message of a history channel (seq > 0: its stream sequence). data goes in as it is when it is valid JSON, and as a JSON
// string otherwise. The header's length is only known once the envelope is
// written, so the envelope is written behind room for the longest header
// and the header is put right in front of it; the frame starts at the
// returned offset.
func appendEnvelopeFrame(dst []byte, subject string, data []byte, seq uint64) ([]byte, int) {
	start := len(dst)
	dst = append(dst, make([]byte, envelopeHeadroom)...)
	body := len(dst)
	dst = append(dst, `{"channel":`...)
	dst = appendJSONString(dst, []byte(subject))
	if seq > 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendUint(dst, seq, 10)
	}
	dst = append(dst, `,"data":`...)
	if json.Valid(data) {
		dst = append(dst, data...)
	} else {
		dst = appendJSONString(dst, data)
	}
	dst = append(dst, '}')
	var hdr [envelopeHeadroom]byte
	h := codec.AppendHeader(hdr[:0], ws.OpText, true, len(dst)-body)
	at := body - len(h)
	copy(dst[at:], h)
	return dst, at - start
}

// appendJSONString appends s as a JSON string. Bytes that are not UTF-8
// become U+FFFD, as encoding/json does.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}
