package auth

// The reasons a token is refused. They are stable, so a caller can use them
// as metric labels or map them to client-visible codes.
const (
	ReasonMissing      = "missing"       // no token at all
	ReasonTooLarge     = "too_large"     // over Config.MaxTokenSize; never decoded
	ReasonMalformed    = "malformed"     // not a compact JWS Herald can decode
	ReasonBadSignature = "bad_signature" // the signature does not match
	ReasonAlgorithm    = "algorithm"     // alg not allowed for the configured key
	ReasonUnknownKey   = "unknown_key"   // no JWKS key for the token's kid
	ReasonExpired      = "expired"       // exp (plus leeway) has passed
	ReasonNotYetValid  = "not_yet_valid" // nbf (minus leeway) is still ahead
	ReasonIssuer       = "issuer"        // iss missing or not Config.Issuer
	ReasonAudience     = "audience"      // aud missing or without Config.Audience
	ReasonClaims       = "claims"        // a claim is missing or has the wrong shape
)

// Error is why Verify refused a token.
//
// Message is one line for a human, fit for the body of an HTTP 401: it
// never holds the token, any part of it (not even its kid), or key
// material, because refusals end up in logs and in responses to whoever
// presented the token. For the same reason an Error wraps nothing: the
// errors of the JWT library may quote bytes of the token.
type Error struct {
	Reason  string // one of the Reason constants
	Message string
}

func (e *Error) Error() string { return e.Message }

// Is reports whether target is an *Error with the same Reason, so that
// errors.Is(err, ErrExpired) holds for every expired token whatever the
// message says.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// ErrExpired matches (with errors.Is) the refusal of an expired token: the
// one refusal a client can fix by itself, by fetching a fresh token.
var ErrExpired error = &Error{Reason: ReasonExpired, Message: "token expired"}

func refuse(reason, message string) *Error {
	return &Error{Reason: reason, Message: message}
}

// The fixed refusals. Every *Error Verify returns is a fresh copy, so a
// caller that changes one changes nothing else.
var messages = map[string]string{
	ReasonMissing:      "no token",
	ReasonMalformed:    "malformed token",
	ReasonBadSignature: "invalid token signature",
	ReasonAlgorithm:    "token signing algorithm not accepted",
	ReasonUnknownKey:   "token signed by an unknown key",
	ReasonExpired:      "token expired",
	ReasonNotYetValid:  "token not valid yet",
	ReasonIssuer:       "token issuer not accepted",
	ReasonAudience:     "token audience not accepted",
	ReasonClaims:       "invalid token claims",
}

func refusal(reason string) *Error {
	return refuse(reason, messages[reason])
}
