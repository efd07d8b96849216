package push

import (
	"math/rand/v2"
	"testing"

	"github.com/herald-ws/herald/engine"
)

// The expiry heap keeps every socket's index right through removals, so
// that removing a socket twice (expired, then closed) does nothing the
// second time, whatever else the heap holds.
func TestExpiryHeapRemoveTwice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var hp expiryHeap
		conns := make([]*engine.Conn, 1+rng.IntN(12))
		for i := range conns {
			conns[i] = &engine.Conn{Session: &session{id: &identity{expires: rng.Int64N(50)}}}
			hp.add(conns[i])
		}
		for _, k := range rng.Perm(len(conns)) {
			c := conns[k]
			hp.remove(c)
			if at := c.Session.(*session).heapAt; at != 0 {
				t.Fatalf("round %d: a removed socket says it is at %d of %d", round, at, len(hp))
			}
			hp.remove(c) // as Closed does after expire
			for i, o := range hp {
				if got := o.Session.(*session).heapAt; got != int32(i+1) {
					t.Fatalf("round %d: the socket at %d says %d", round, i, got-1)
				}
				if i > 0 && expiresOf(hp[(i-1)/2]) > expiresOf(o) {
					t.Fatalf("round %d: not a heap at %d", round, i)
				}
			}
		}
	}
}
