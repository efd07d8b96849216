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

// refusal is the refusal of reason with its fixed message. Each call
// returns a fresh *Error, so a caller that changes one changes nothing
// else.
func refusal(reason string) *Error {
	var m string
	switch reason {
	case ReasonMissing:
		m = "no token"
	case ReasonMalformed:
		m = "malformed token"
	case ReasonBadSignature:
		m = "invalid token signature"
	case ReasonAlgorithm:
		m = "token signing algorithm not accepted"
	case ReasonUnknownKey:
		m = "token signed by an unknown key"
	case ReasonExpired:
		m = "token expired"
	case ReasonNotYetValid:
		m = "token not valid yet"
	case ReasonIssuer:
		m = "token issuer not accepted"
	case ReasonAudience:
		m = "token audience not accepted"
	default:
		m = "invalid token claims"
	}
	return refuse(reason, m)
}
