// Package channel is the grammar of Herald's channel names and the errors
// Herald answers in band. Channels are NATS subjects: Validate says which
// names a client may use, Matches how a wildcard pattern selects subjects,
// and Error is the refusal a client receives as
// {"op":"error","code":...,"message":...}, with one stable set of codes.
package channel

import (
	"strings"
	"unicode/utf8"
	"unsafe"
)

// MaxLen is the longest channel name, in bytes, that Herald accepts.
// NATS itself allows longer subjects; the cap keeps per-socket indexes and
// the protocol messages that echo channel names small.
const MaxLen = 256

// The codes of Herald's in-band errors. They are part of the client
// protocol ({"op":"error","code":...}), so they never change once released.
const (
	CodeInvalidChannel    = "invalid_channel"    // not a valid channel name
	CodeWildcardsDisabled = "wildcards_disabled" // a wildcard where they are off
	CodeTooManyChannels   = "too_many_channels"  // over the per-connection cap
	CodeBadRequest        = "bad_request"        // not a command Herald knows
	CodeUnavailable       = "unavailable"        // the bus could not subscribe
	CodeForbidden         = "forbidden"          // not permitted to this client
)

// Error is a refusal a client can act on. Code is stable and
// machine-readable; Message is a short human-readable reason that never
// echoes the offending name back (the caller decides whether to).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func invalid(msg string) *Error {
	return &Error{Code: CodeInvalidChannel, Message: msg}
}

// Validate checks a channel name a client asked for. A channel is a
// NATS subject of 1..MaxLen bytes: tokens separated by '.', no empty
// tokens, no ASCII whitespace or control bytes, valid UTF-8. '*' is allowed
// only as a whole token and '>' only as the whole last token; when
// allowWildcards is false either one is refused with CodeWildcardsDisabled, so
// a client can tell "malformed" from "not allowed here".
//
// The error, if any, is a *Error. Validate does not allocate
// unless it returns an error.
func Validate(ch string, allowWildcards bool) error {
	return validate(ch, allowWildcards)
}

// ValidateBytes is Validate for a name still in a network
// buffer (for example a query parameter before the upgrade). It neither
// copies nor retains ch.
func ValidateBytes(ch []byte, allowWildcards bool) error {
	// The string view lives only for the duration of the call and is never
	// stored or returned, so sharing ch's memory is safe.
	return validate(unsafe.String(unsafe.SliceData(ch), len(ch)), allowWildcards)
}

// validate returns *Error as error only when non-nil, so that
// callers never see a typed nil inside a non-nil interface.
func validate(ch string, allowWildcards bool) error {
	if ch == "" {
		return invalid("channel is empty")
	}
	if len(ch) > MaxLen {
		return invalid("channel is longer than 256 bytes")
	}
	wildcard := false
	ascii := true
	start := 0 // first byte of the current token
	for i := 0; i <= len(ch); i++ {
		if i < len(ch) {
			c := ch[i]
			switch {
			case c == '.':
			case c <= ' ' || c == 0x7f:
				return invalid("channel contains whitespace or a control byte")
			case c >= utf8.RuneSelf:
				ascii = false
				continue
			default:
				continue
			}
		}
		// ch[start:i] is a complete token.
		tok := ch[start:i]
		switch {
		case tok == "":
			return invalid("channel has an empty token (leading, trailing or double '.')")
		case tok == "*":
			wildcard = true
		case tok == ">":
			if i != len(ch) {
				return invalid("'>' is only allowed as the last token")
			}
			wildcard = true
		case strings.IndexByte(tok, '*') >= 0:
			return invalid("'*' is only allowed as a whole token")
		case strings.IndexByte(tok, '>') >= 0:
			return invalid("'>' is only allowed as a whole last token")
		}
		start = i + 1
	}
	if !ascii && !utf8.ValidString(ch) {
		return invalid("channel is not valid UTF-8")
	}
	if wildcard && !allowWildcards {
		return &Error{Code: CodeWildcardsDisabled, Message: "wildcard channels are disabled"}
	}
	return nil
}

// Matches reports whether the concrete subject matches pattern under NATS
// wildcard rules: '*' matches exactly one token, '>' (as the last token)
// matches one or more trailing tokens, any other token matches itself.
// Wildcards only have meaning in pattern. An empty token in subject never
// matches a wildcard. Matches does not allocate.
//
// Both arguments are expected to be valid (see Validate); for
// malformed input the result is well defined but not meaningful.
func Matches(pattern, subject string) bool {
	if pattern == "" || subject == "" {
		return false
	}
	for {
		pi := strings.IndexByte(pattern, '.')
		ptok := pattern
		if pi >= 0 {
			ptok = pattern[:pi]
		}
		if pi < 0 && ptok == ">" {
			// One or more tokens remain in subject, none of them empty.
			return subject != "" && subject[0] != '.' && subject[len(subject)-1] != '.' &&
				!strings.Contains(subject, "..")
		}
		si := strings.IndexByte(subject, '.')
		stok := subject
		if si >= 0 {
			stok = subject[:si]
		}
		if ptok == "*" {
			if stok == "" {
				return false
			}
		} else if ptok != stok {
			return false
		}
		if pi < 0 || si < 0 {
			return pi < 0 && si < 0
		}
		pattern, subject = pattern[pi+1:], subject[si+1:]
	}
}

// Reserved reports whether ch lies in a subject space no client may touch:
// its first token starts with '$' or '_'. NATS keeps its own APIs and reply
// subjects there ($SYS., $JS., $KV., $O., $SRV., _INBOX., _R_. and more), and
// new ones keep appearing under the same two prefixes, so the rule is the
// prefix, not a list. A pattern whose first token is a wildcard is not
// reserved by this test, but can match reserved subjects: see Covers.
func Reserved(ch string) bool {
	return ch != "" && (ch[0] == '$' || ch[0] == '_')
}

// Covers reports whether every subject that pattern p matches is also matched
// by pattern a: the question "does permission a allow subscribing to p".
// For example prices.> covers prices.* and prices.A.B, prices.* does not
// cover prices.>, and > is covered only by >. A literal covers only itself.
// Both are expected to be valid patterns (see Validate). Covers does not
// allocate.
func Covers(a, p string) bool {
	if a == "" || p == "" {
		return false
	}
	for {
		ai := strings.IndexByte(a, '.')
		atok := a
		if ai >= 0 {
			atok = a[:ai]
		}
		pi := strings.IndexByte(p, '.')
		ptok := p
		if pi >= 0 {
			ptok = p[:pi]
		}
		switch {
		case ai < 0 && atok == ">":
			// p has at least one token left here, and whatever it is
			// (literal, '*' or '>') it matches one or more tokens.
			return true
		case ptok == ">":
			// p matches any number of tokens from here; only a '>' in a
			// (the case above) matches them all.
			return false
		case atok != "*" && atok != ptok:
			// A literal in a matches only itself, so p must have the
			// same literal ('*' in p would match other tokens).
			return false
		}
		if ai < 0 || pi < 0 {
			return ai < 0 && pi < 0
		}
		a, p = a[ai+1:], p[pi+1:]
	}
}
