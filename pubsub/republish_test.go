package pubsub

import (
	"fmt"
	"testing"
	"time"

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
	for range 2 {
		select {
		case err := <-h.lives:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no Live")
		}
	}
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
		m := &nats.Msg{Subject: tt.subject, Data: []byte("1"), Header: nats.Header{}}
		if tt.seq != "" {
			m.Header.Set(HeaderSequence, tt.seq)
			m.Header.Set(HeaderLastSequence, "3")
		}
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-h.lines:
			if got != tt.want {
				t.Errorf("%s with Nats-Sequence %q: %s, want %s", tt.subject, tt.seq, got, tt.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: nothing delivered", tt.subject)
		}
	}
}
