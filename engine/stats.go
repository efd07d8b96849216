package engine

// Why an upgrade was refused, for the refused-upgrades counters.
const (
	refusedBadRequest  = iota // malformed request or handshake (400, 505)
	refusedNotFound           // no such path (404)
	refusedForbidden          // Origin or CheckUpgrade said no (401, 403)
	refusedVersion            // WebSocket version other than 13 (426)
	refusedTooLarge           // request head over the cap (431)
	refusedConnLimit          // --max-conns reached (503)
	refusedRateLimit          // --max-accept-rate reached (503)
	refusedDraining           // shutting down (503)
	refusedUnavailable        // the endpoint could not accept in time, or said so (503)
	numRefusals
)

// RefusalReasons names the refused-upgrade counters of Stats.Refused, in
// order.
var RefusalReasons = [numRefusals]string{
	"bad_request", "not_found", "forbidden", "version", "too_large", "conn_limit", "rate_limit", "draining", "unavailable",
}

// refusalFor classifies an HTTP error status.
func refusalFor(status int) int {
	switch status {
	case 404:
		return refusedNotFound
	case 401, 403:
		return refusedForbidden
	case 426:
		return refusedVersion
	case 431:
		return refusedTooLarge
	case 503:
		return refusedUnavailable
	}
	return refusedBadRequest
}
