package main

import (
	"fmt"
	"net/url"
	"strings"
)

// originList is the --allowed-origins flag: the browser origins whose pages
// may open a WebSocket to Herald. Without it any page on any site could
// connect with its visitors' cookies (cross-site WebSocket hijacking).
type originList []string

func (o *originList) String() string { return strings.Join(*o, ",") }

// Set takes a comma-separated list of origins, scheme://host[:port], where
// the host may start with "*." to allow every subdomain.
func (o *originList) Set(v string) error {
	for _, origin := range strings.Split(v, ",") {
		origin = strings.ToLower(strings.TrimSpace(origin))
		if origin == "" {
			continue
		}
		u, err := url.Parse(origin)
		if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return fmt.Errorf("%q is not an origin: want scheme://host[:port], e.g. https://app.example.com or https://*.example.com", origin)
		}
		*o = append(*o, origin)
	}
	return nil
}

// allows reports whether origin is on the list. It runs once per upgrade
// that carries an Origin header.
func (o originList) allows(origin []byte) bool {
	got := strings.ToLower(string(origin))
	for _, want := range o {
		if got == want {
			return true
		}
		scheme, host, ok := strings.Cut(want, "://*.")
		if ok && strings.HasPrefix(got, scheme+"://") && strings.HasSuffix(got, "."+host) {
			return true
		}
	}
	return false
}

// check returns the engine's origin check: nil, allowing every origin,
// when the list is empty.
func (o originList) check() func([]byte) bool {
	if len(o) == 0 {
		return nil
	}
	return o.allows
}
