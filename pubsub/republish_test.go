package pubsub

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
)

// sequenced records what a SequencedHandler gets, as lines.
type sequenced struct {
	lines chan string
	lives chan error
}

func (s *sequenced) Message(subject string, data []byte, subs []uint64) {
	s.lines <- fmt.Sprintf("message %s %s %v", subject, data, subs)
}

func (s *sequenced) Republished(subject string, data []byte, subs []uint64, seq, last uint64) {
	s.lines <- fmt.Sprintf("republished %s %s %v seq=%d last=%d", subject, data, subs, seq, last)
}

func (s *sequenced) Live(id uint64, err error) { s.lives <- err }

// awaitLives waits for n answers, each without an error.
func (s *sequenced) awaitLives(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-s.lives:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no Live")
		}
	}
}

// publish sends "1" on subject, with the headers a stream's republish sets
// when seq is not empty (Nats-Last-Sequence 3), and returns the line the
// handler got for it.
func (s *sequenced) publish(t *testing.T, nc *nats.Conn, subject, seq string) string {
	t.Helper()
	m := &nats.Msg{Subject: subject, Data: []byte("1"), Header: nats.Header{}}
	if seq != "" {
		m.Header.Set(HeaderSequence, seq)
		m.Header.Set(HeaderLastSequence, "3")
	}
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-s.lines:
		return got
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing delivered", subject)
		return ""
	}
}

// A message under a prefix given to SetRepublished, with the headers a
// stream sets, reaches Republished with the prefix taken off and its two
// sequences; the same headers on any other subject, or a malformed
// sequence under the prefix, are an ordinary message: only the subjects
// Herald subscribed to as republish destinations are taken as such.
func TestRepublishedOnlyUnderPrefixes(t *testing.T) {
	h := &sequenced{lines: make(chan string, 16), lives: make(chan error, 4)}
	b, _ := startEmbeddedBroker(t, h)
	b.SetRepublished([]string{"_HR.S."})
	b.Subscribe(1, "_HR.S.>")
	b.Subscribe(2, "chat.b")
	h.awaitLives(t, 2)
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, tt := range []struct {
		subject, seq, want string
	}{
		{"_HR.S.chat.a", "5", "republished chat.a 1 [1] seq=5 last=3"},
		{"chat.b", "5", "message chat.b 1 [2]"},
		{"_HR.S.chat.c", "x", "message _HR.S.chat.c 1 [1]"},
		{"_HR.S.chat.d", "", "message _HR.S.chat.d 1 [1]"},
	} {
		if got := h.publish(t, nc, tt.subject, tt.seq); got != tt.want {
			t.Errorf("%s with Nats-Sequence %q: %s, want %s", tt.subject, tt.seq, got, tt.want)
		}
	}
}

// Under a republish prefix, a wide pattern covers the republished subjects
// of the channels it covers: two personal channels share one NATS
// subscription (the carrier on PREFIX+W), each message reaches its own
// channel only, through Republished with the prefix taken off, and a member
// keeps the caller's pattern string, not a copy with the prefix: a personal
// history channel costs the broker what a plain one does. Without a wide
// pattern that covers it, SubscribeUnder subscribes the whole subject.
func TestSubscribeUnderWidePattern(t *testing.T) {
	h := &sequenced{lines: make(chan string, 16), lives: make(chan error, 4)}
	b, _ := startBroker(t, Config{Handler: h, Listen: "127.0.0.1:-1", Wide: []string{"user.*"}})
	b.SetRepublished([]string{"_HR.S."})
	one, two := strings.Clone("user.1"), strings.Clone("user.2")
	b.SubscribeUnder(1, "_HR.S.", one)
	b.SubscribeUnder(2, "_HR.S.", two)
	b.SubscribeUnder(3, "_HR.S.", "room.9") // no wide pattern covers it
	b.SubscribeUnder(4, "_HR.OTHER.", "user.3")
	h.awaitLives(t, 4)
	if n := b.NATSSubscriptions(); n != 3 {
		t.Fatalf("%d NATS subscriptions, want 3: the carrier of _HR.S.user.*, _HR.S.room.9, _HR.OTHER.user.3", n)
	}
	b.mu.Lock()
	shared := unsafe.StringData(b.subs[1].pattern) == unsafe.StringData(one)
	b.mu.Unlock()
	if !shared {
		t.Error("the member keeps a copy of its pattern")
	}
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, tt := range []struct{ subject, want string }{
		{"_HR.S.user.2", "republished user.2 1 [2] seq=7 last=3"},
		{"_HR.S.user.1", "republished user.1 1 [1] seq=7 last=3"},
		{"_HR.S.room.9", "republished room.9 1 [3] seq=7 last=3"},
		{"_HR.OTHER.user.3", "message _HR.OTHER.user.3 1 [4]"}, // a prefix SetRepublished does not know
	} {
		if got := h.publish(t, nc, tt.subject, "7"); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.subject, got, tt.want)
		}
	}
}
