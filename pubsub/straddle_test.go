package pubsub

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
)

// eventLog is a Handler that writes down every call, in order.
type eventLog struct {
	mu    sync.Mutex
	lines []string
}

func (e *eventLog) Message(subject string, data []byte, subs []uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lines = append(e.lines, fmt.Sprintf("msg %s %s %v", subject, data, slices.Clone(subs)))
}

func (e *eventLog) Live(id uint64, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lines = append(e.lines, fmt.Sprintf("live %d %v", id, err))
}

// TestStraddlingCopies drives the dispatcher with the orders in which
// nats.go can push copies of one publish around a batch of answers (the
// marker lands between two copies when the second is in nats.go's next
// read). Subscription 1 (a.b) is live; 2 (a.*) and 3 (>) go live in the
// batch unless said. Whatever the order, the publish reaches the ids of
// the live subscriptions through one call after the Live, or through the
// ids live before it, never twice.
func TestStraddlingCopies(t *testing.T) {
	for _, tc := range []struct {
		name string
		feed string // copies by subscription id, | is the batch of answers
		live []uint64
		want []string
	}{
		{"dropped before, live twin after", "2|1", []uint64{2}, []string{"live 2 <nil>", "msg a.b M [1 2]"}},
		{"live twin before, just-live copy after", "1|2", []uint64{2}, []string{"msg a.b M [1]", "live 2 <nil>"}},
		{"two dropped, one goes live, twins after", "3 2|2? 1", []uint64{3}, []string{"live 3 <nil>", "msg a.b M [1 3]"}},
		{"just-live copy first, old twin last", "3|2 1", []uint64{2, 3}, []string{"live 2 <nil>", "live 3 <nil>", "msg a.b M [1 3 2]"}},
		{"no straddle", "1 2|", []uint64{2}, []string{"msg a.b M [1]", "live 2 <nil>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &eventLog{}
			b := &Broker{
				handler:      h,
				log:          slog.New(slog.NewTextHandler(io.Discard, nil)),
				msgs:         make(chan *nats.Msg, 64),
				registered:   make(map[*nats.Subscription]*subscription),
				dispatchDone: make(chan struct{}),
			}
			natsSubs := map[uint64]*nats.Subscription{}
			subs := map[uint64]*subscription{}
			for id, pattern := range map[uint64]string{1: "a.b", 2: "a.*", 3: ">"} {
				natsSubs[id] = &nats.Subscription{Subject: pattern}
				subs[id] = &subscription{id: id, pattern: pattern, live: id == 1}
				b.registered[natsSubs[id]] = subs[id]
			}
			var batch []answer
			for _, id := range tc.live {
				batch = append(batch, answer{s: subs[id]})
			}
			b.answers = [][]answer{batch}
			// "2?" is a copy through 2 after the batch when 2 stays not live.
			feed := strings.NewReplacer("|", " | ", "?", "").Replace(tc.feed)
			var msgs []*nats.Msg
			for _, f := range strings.Fields(feed) {
				if f == "|" {
					msgs = append(msgs, ctlMarker)
					continue
				}
				var id uint64
				fmt.Sscan(f, &id)
				msgs = append(msgs, &nats.Msg{Subject: "a.b", Data: []byte("M"), Sub: natsSubs[id]})
			}
			// The copies after the batch come once it is applied: pushed
			// by nats.go after the dispatcher took the marker. (Copies
			// already waiting behind the marker are carryOver's, tested
			// by the real-server tests.)
			at := slices.Index(msgs, ctlMarker)
			go b.dispatch()
			for _, m := range msgs[:at+1] {
				b.msgs <- m
			}
			waitFor(t, "the answers", func() bool {
				h.mu.Lock()
				defer h.mu.Unlock()
				n := 0
				for _, l := range h.lines {
					if strings.HasPrefix(l, "live") {
						n++
					}
				}
				return n == len(tc.live)
			})
			for _, m := range msgs[at+1:] {
				b.msgs <- m
			}
			b.msgs <- stopMarker
			<-b.dispatchDone
			h.mu.Lock()
			defer h.mu.Unlock()
			if !slices.Equal(h.lines, tc.want) {
				t.Fatalf("got\n  %s\nwant\n  %s", strings.Join(h.lines, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}
