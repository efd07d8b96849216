package push

import (
	"bytes"
	"net/url"
	"unsafe"
)

// query walks the key=value pairs of a URL query, unescaped. key and value
// are views of the query's bytes, valid while they are, unless unescaping
// had to copy them.
type query struct {
	rest       []byte
	key, value string
	err        error // the first malformed escape; next stops there
}

func (q *query) next() bool {
	for len(q.rest) > 0 && q.err == nil {
		var pair []byte
		pair, q.rest, _ = bytes.Cut(q.rest, []byte("&"))
		if len(pair) == 0 {
			continue
		}
		k, v, _ := bytes.Cut(pair, []byte("="))
		if q.key, q.err = unescapeQuery(k); q.err != nil {
			return false
		}
		if q.value, q.err = unescapeQuery(v); q.err != nil {
			return false
		}
		return true
	}
	return false
}

// unescapeQuery returns b as a string, decoding %XX and '+' when present.
// Without escapes it returns a view of b, not a copy.
func unescapeQuery(b []byte) (string, error) {
	if bytes.IndexAny(b, "%+") < 0 {
		return unsafe.String(unsafe.SliceData(b), len(b)), nil
	}
	return url.QueryUnescape(string(b))
}
