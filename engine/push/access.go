package push

import (
	"strings"

	"github.com/herald-ws/herald/codec/channel"
	"github.com/herald-ws/herald/engine/push/auth"
)

// SubjectToken is the placeholder for the token's subject in
// Config.UserChannels and Config.UserPublish: user.{sub}.> lets alice read
// user.alice.> and nothing of bob's.
const SubjectToken = "{sub}"

// grants is a set of permission patterns: a request for pattern P is
// allowed when one of them covers P (channel.Covers). literalFirst stands
// for the default of a server without authentication: every channel
// whose first token is literal.
type grants struct {
	patterns     []string
	literalFirst bool
}

// allows reports whether the grants cover pattern. Reserved subjects are
// refused before this is asked.
func (g *grants) allows(pattern string) bool {
	if g.literalFirst {
		first, _, _ := strings.Cut(pattern, ".")
		if first != "*" && first != ">" {
			return true
		}
	}
	for _, a := range g.patterns {
		if channel.Covers(a, pattern) {
			return true
		}
	}
	return false
}

// identity is what a verified token made of a connection: shared by
// nothing else, replaced whole on refresh.
type identity struct {
	user      string
	expires   int64 // Unix seconds
	subscribe grants
	publish   grants
}

// identityFor turns verified claims into the connection's identity: the
// token's own patterns plus the server's per-user ones.
func (h *Hub) identityFor(c auth.Claims) *identity {
	return &identity{
		user:      c.Subject,
		expires:   c.Expires.Unix(),
		subscribe: grants{patterns: withUser(c.Subscribe, h.userChannels, c.Subject)},
		publish:   grants{patterns: withUser(c.Publish, h.userPublish, c.Subject)},
	}
}

// withUser is the token's patterns followed by the server's per-user
// patterns with {sub} replaced by the token's subject. The subject is a
// client-chosen string as far as the operator's patterns go: one that is
// not a single literal token ("*", "a.b", ">", "") would widen
// user.{sub}.> to other users' channels, so such a subject gets none of
// them.
//
// A token's own pattern that is not a valid channel pattern grants
// nothing: auth checks only the claims' shape.
func withUser(own, perUser []string, subject string) []string {
	out := make([]string, 0, len(own)+len(perUser))
	for _, p := range own {
		if channel.Validate(p, true) == nil {
			out = append(out, p)
		}
	}
	if safeSubjectToken(subject) {
		for _, p := range perUser {
			out = append(out, strings.ReplaceAll(p, SubjectToken, subject))
		}
	}
	return out
}

// safeSubjectToken reports whether s can stand for one literal token of a
// channel name.
func safeSubjectToken(s string) bool {
	return s != "" && s != "*" && s != ">" && !strings.ContainsRune(s, '.') &&
		channel.Validate(s, false) == nil
}

// checkPattern says whether a connection with identity id (nil for an
// anonymous one) may subscribe to pattern, which is valid: nil, or a
// *channel.Error with CodeForbidden.
func (h *Hub) checkSubscribe(id *identity, pattern string) error {
	if channel.Reserved(pattern) {
		return errReserved
	}
	if h.publicChannels.allows(pattern) || (id != nil && id.subscribe.allows(pattern)) {
		return nil
	}
	return errNotPermitted
}

// checkPublish says whether a connection may publish on subject: nil, or
// a *channel.Error (bad_request for a wildcard or a malformed name,
// forbidden otherwise).
func (h *Hub) checkPublish(id *identity, subject string) error {
	if err := channel.Validate(subject, false); err != nil {
		if ce, ok := err.(*channel.Error); ok && ce.Code == channel.CodeWildcardsDisabled {
			return badRequest("publish needs a concrete channel, not a wildcard")
		}
		return err
	}
	if channel.Reserved(subject) {
		return errReserved
	}
	if h.publicPublish.allows(subject) || (id != nil && id.publish.allows(subject)) {
		return nil
	}
	return errNotPermitted
}

var (
	errReserved     = &channel.Error{Code: channel.CodeForbidden, Message: "channels starting with '$' or '_' are reserved"}
	errNotPermitted = &channel.Error{Code: channel.CodeForbidden, Message: "not permitted"}
)
