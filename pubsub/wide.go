package pubsub

import (
	"fmt"
	"strings"

	"github.com/herald-ws/herald/codec/channel"
)

// Wide groups. A NATS subscription costs about 1.2 KB (the server's share
// and nats.go's), far more than Herald's own bookkeeping for one, so with a
// channel per user the NATS subscriptions are most of the memory. A wide
// pattern W (Config.Wide) replaces the NATS subscriptions of every pattern
// it covers with one subscription to W, whose messages the dispatcher routes
// to the members whose patterns match the subject.
//
// Lifetimes. W's NATS subscription (the group's carrier, a subscription
// with carrier set and no id) is made by the worker when the group gets its
// first member and unsubscribed when its last member leaves: W is a
// reference count of its members. Keeping it forever would spare a
// SUB/UNSUB pair when a lone member comes and goes, but a Herald instance
// that no longer serves anyone under W would keep receiving all of W's
// traffic, which is the one cost of a wide pattern that grows with the
// fleet. A carrier once unsubscribed is never reused: a new first member
// makes a new one.
//
// Live. A member waits for its carrier's round trip when the carrier has not
// had one yet, and is answered with it (one batch, like every other
// subscription made in that round trip). A member that joins a carrier
// already live is answered at once, with no NATS call: the worker hands its
// Live to the dispatcher through the ordered answer stream, and the
// dispatcher adds the member to the routing right before it calls Live. W
// is registered on the server, so every message published after the Live
// reaches this process through the carrier behind the Live's marker, and the
// routing then includes the member. The one exception is a connection that
// may not have W registered: after a disconnect or a reconnect (nats.go
// re-sends every SUB on the new connection, but nobody has seen the server
// take them yet), a member joining waits for a round trip started after the
// reconnect, exactly like an ordinary subscription made then.
//
// Routing. The dispatcher keeps, per group, the live members with literal
// patterns in a map subject -> member (further members on one subject, which
// the hub never makes, in a second map that is empty otherwise), one lookup
// per message whatever the number of members, and the live members with
// wildcard patterns in a slice checked with channel.Matches. Nothing is
// allocated per message.

// wideGroup is one wide pattern and its members.
type wideGroup struct {
	pattern string // the NATS subject of its carrier
	// under and strip: a group SetRepublished made for a republish prefix
	// (under is 1 + its index, strip its length) has pattern PREFIX+W, and
	// its members, which are under that prefix too, keep their patterns
	// without it; 0 and 0 for a group of Config.Wide.
	under uint8
	strip int

	// Worker only.
	carrier *subscription   // the current NATS subscription to pattern; nil when there is none
	members int             // members subscribed, not unsubscribed, not refused
	waiting []*subscription // members answered with the carrier's round trip
	// refused is the server's refusal of the live carrier's SUB when nats.go
	// re-sent it on a reconnect (see perm.go): members joining are refused
	// with it, until a round trip asked for on a later connection comes
	// back without it (refusedEpoch is the epoch it was learnt at).
	refused      error
	refusedEpoch uint64

	// Dispatcher only: the live members.
	literal map[string]*subscription   // subject -> its member
	more    map[string][]*subscription // subject -> its other members, rare: the hub makes one subscription per pattern
	wild    []*subscription            // members with wildcard patterns
}

// newWideGroups validates Config.Wide and returns its groups, in order.
func newWideGroups(patterns []string) ([]*wideGroup, error) {
	groups := make([]*wideGroup, 0, len(patterns))
	for i, p := range patterns {
		if err := channel.Validate(p, true); err != nil {
			return nil, fmt.Errorf("pubsub: Config.Wide[%d] %q: %w", i, p, err)
		}
		if channel.Reserved(p) {
			return nil, fmt.Errorf("pubsub: Config.Wide[%d] %q: a subject space reserved to NATS (first token starts with $ or _) cannot be a wide pattern", i, p)
		}
		groups = append(groups, &wideGroup{
			pattern: strings.Clone(p),
			literal: make(map[string]*subscription),
		})
	}
	return groups, nil
}

// wideFor returns the group whose pattern covers s's (the first in
// Config.Wide order) under the same republish prefix, or nil.
func (b *Broker) wideFor(s *subscription) *wideGroup {
	for _, g := range b.wide {
		if g.under == s.under && channel.Covers(g.pattern[g.strip:], s.pattern) {
			return g
		}
	}
	return nil
}

// isLiteral reports whether a valid pattern has no wildcard: '*' and '>'
// appear only as whole tokens in one.
func isLiteral(pattern string) bool { return !strings.ContainsAny(pattern, "*>") }

// add puts a member that just went live into the routing. Dispatcher only.
func (g *wideGroup) add(s *subscription) {
	switch {
	case !isLiteral(s.pattern):
		g.wild = append(g.wild, s)
	case g.literal[s.pattern] == nil:
		g.literal[s.pattern] = s
	default:
		if g.more == nil {
			g.more = make(map[string][]*subscription)
		}
		g.more[s.pattern] = append(g.more[s.pattern], s)
	}
}

// remove takes a member out of the routing. Dispatcher only.
func (g *wideGroup) remove(s *subscription) {
	if !isLiteral(s.pattern) {
		g.wild = without(g.wild, s)
		return
	}
	more := g.more[s.pattern]
	switch {
	case g.literal[s.pattern] != s:
		more = without(more, s)
	case len(more) == 0:
		delete(g.literal, s.pattern)
		return
	default:
		g.literal[s.pattern] = more[len(more)-1]
		more[len(more)-1] = nil
		more = more[:len(more)-1]
	}
	if len(more) == 0 {
		delete(g.more, s.pattern)
	} else {
		g.more[s.pattern] = more
	}
}

// without removes s from list, in place, order not kept.
func without(list []*subscription, s *subscription) []*subscription {
	for i, c := range list {
		if c == s {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			return list[:last]
		}
	}
	return list
}

// route appends the ids of the live members a message on subject reaches.
// Dispatcher only; it does not allocate once ids has room.
func (g *wideGroup) route(subject string, ids []uint64) []uint64 {
	if s := g.literal[subject]; s != nil && !s.cancelled.Load() {
		ids = append(ids, s.id)
	}
	if len(g.more) > 0 {
		for _, s := range g.more[subject] {
			if !s.cancelled.Load() {
				ids = append(ids, s.id)
			}
		}
	}
	for _, s := range g.wild {
		if !s.cancelled.Load() && channel.Matches(s.pattern, subject) {
			ids = append(ids, s.id)
		}
	}
	return ids
}
