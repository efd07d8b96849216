package auth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// cache remembers the tokens Verify accepted, so that a reconnect storm, in
// which thousands of clients present again the tokens they had a moment
// ago, costs a hash and a map lookup per token rather than an RSA or ECDSA
// verification. It is keyed by the SHA-256 of the token, so it holds no
// token, and every entry still goes through the expiry check on a hit.
//
// When full, it evicts an arbitrary entry: Go's map iteration starts at a
// random place, so "the first entry a range yields" is a cheap random
// choice that needs no list to maintain. Under a storm, the tokens that
// matter are presented many times and so are soon back in.
type cache struct {
	size int

	mu      sync.Mutex
	entries map[[sha256.Size]byte]Claims
	gen     uint64 // bumped by purge
}

func newCache(size int) *cache {
	if size <= 0 {
		return nil
	}
	return &cache{size: size, entries: make(map[[sha256.Size]byte]Claims)}
}

// get returns the claims cached for key, if any, along with the generation
// a subsequent put must present. An entry that expires (at exp plus
// leeway) is dropped rather than returned: a cached token must still be
// refused once it expires.
func (c *cache) get(key [sha256.Size]byte, now time.Time, leeway time.Duration) (claims Claims, hit, expired bool, gen uint64) {
	if c == nil {
		return Claims{}, false, false, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	claims, hit = c.entries[key]
	if hit && !now.Before(claims.Expires.Add(leeway)) {
		delete(c.entries, key)
		return Claims{}, false, true, c.gen
	}
	return claims, hit, false, c.gen
}

// put caches claims under key unless the cache was purged since the get
// that returned gen: a token verified with a key that a refresh has just
// removed must not outlive the purge.
func (c *cache) put(key [sha256.Size]byte, claims Claims, gen uint64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.size {
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = claims
}

// purge forgets every entry, for when a signing key is withdrawn.
func (c *cache) purge() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.gen++
}

func (c *cache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
