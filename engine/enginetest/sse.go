package enginetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Event is one item of a text/event-stream, as an EventSource parses it
// (the HTML standard's "event stream interpretation"), plus what a browser
// does not show a page: comments and the retry field.
type Event struct {
	Event string // the event type; "" means "message"
	Data  string // the data lines, joined with "\n"
	ID    string // the id field of this event; "" when it had none
	HasID bool
	// Retry is the last retry field before the event (milliseconds), -1
	// for none; Comments the comment lines before it, colon dropped.
	Retry    int
	Comments []string
}

// Stream reads the events of an event-stream response, independently of
// the server's code: it follows the standard's parsing rules, so that
// tests check what a browser would see.
type Stream struct {
	Resp *http.Response
	r    *bufio.Reader
}

// OpenStream sends GET url with header and returns the response, whatever
// its status, with a reader of its events. The body closes with the test;
// ctx bounds the whole request.
func OpenStream(t testing.TB, ctx context.Context, url string, header http.Header) *Stream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	// A transport of its own: a pooled connection would outlive the test.
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		resp.Body.Close()
		tr.CloseIdleConnections()
	})
	return &Stream{Resp: resp, r: bufio.NewReader(resp.Body)}
}

// Next returns the next dispatched event, or the error that ended the
// stream (io.EOF when the server ended it cleanly). A block without data
// is not an event (the standard drops it): heartbeats and retry lines
// are seen with NextItem.
func (s *Stream) Next() (Event, error) {
	for {
		ev, dispatched, err := s.block()
		if err != nil {
			return Event{}, err
		}
		if dispatched {
			return ev, nil
		}
	}
}

// NextItem is Next that also returns a block holding only comments or a
// retry (a heartbeat, the stream's first retry line): every blank-line
// terminated block, data or not.
func (s *Stream) NextItem() (Event, error) {
	ev, _, err := s.block()
	return ev, err
}

// block reads up to a blank line and reports whether it dispatched an
// event (had data lines).
func (s *Stream) block() (Event, bool, error) {
	ev := Event{Retry: -1}
	var data []string
	hasData := false
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" {
				return Event{}, false, io.EOF
			}
			return Event{}, false, fmt.Errorf("event stream: %w (partial line %q)", err, line)
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if !hasData && ev.Event == "" && !ev.HasID && len(ev.Comments) == 0 && ev.Retry < 0 {
				continue
			}
			if !hasData {
				return ev, false, nil // not dispatched: comments, retry
			}
			ev.Data = strings.Join(data, "\n")
			return ev, true, nil
		}
		if strings.HasPrefix(line, ":") {
			ev.Comments = append(ev.Comments, strings.TrimPrefix(line[1:], " "))
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.Event = value
		case "data":
			data = append(data, value)
			hasData = true
		case "id":
			if !strings.Contains(value, "\x00") {
				ev.ID, ev.HasID = value, true
			}
		case "retry":
			if n, err := strconv.Atoi(value); err == nil && n >= 0 {
				ev.Retry = n
			}
		}
	}
}

// NextWithin is Next bounded by d: a stream that stays silent that long
// fails the test.
func (s *Stream) NextWithin(t testing.TB, d time.Duration) Event {
	t.Helper()
	type result struct {
		ev  Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		ev, err := s.Next()
		done <- result{ev, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("event stream ended: %v", r.err)
		}
		return r.ev
	case <-time.After(d):
		s.Resp.Body.Close() // ends the read above
		t.Fatalf("no event within %v", d)
	}
	return Event{}
}
