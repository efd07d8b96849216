package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/herald-ws/herald/engine"
)

// A push server's memory is mostly its idle connections, and a burst of
// new ones (a deploy, a reconnect storm) leaves garbage behind: the accept
// and handshake path allocates a little per connection that does not
// outlive it. An idle server allocates almost nothing afterwards, so the
// collector may not run again for two minutes, and the runtime returns
// freed pages to the OS only gradually; meanwhile the box holds that
// garbage resident, which is what it was sized by. settleMemory collects
// once a burst is over instead, so resident memory comes down to what the
// connections hold within seconds.
const (
	settleBurst = 1000            // new connections that make a burst
	settleQuiet = 1 * time.Second // how long without new ones ends it
)

// settleMemory watches srv's accepted connections until ctx ends, and
// after every burst followed by a quiet spell runs a collection and
// returns freed memory to the OS.
func settleMemory(ctx context.Context, srv *engine.Server, log *slog.Logger) {
	tick := time.NewTicker(settleQuiet / 4)
	defer tick.Stop()
	var seen, settled uint64
	lastNew := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			accepted := srv.Stats().Accepted
			if accepted != seen {
				seen, lastNew = accepted, now
				continue
			}
			if accepted-settled >= settleBurst && now.Sub(lastNew) >= settleQuiet {
				start := time.Now()
				debug.FreeOSMemory()
				log.Debug("memory settled after a connection burst", "new_connections", accepted-settled, "took", time.Since(start))
				settled = accepted
			}
		}
	}
}
