package channel

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestValidate(t *testing.T) {
	long := strings.Repeat("a.", MaxLen/2-1) + "bb" // exactly MaxLen bytes
	if len(long) != MaxLen {
		t.Fatalf("test setup: len(long) = %d", len(long))
	}
	const ok = ""
	tests := []struct {
		name    string
		ch      string
		wildOK  string // expected code with wildcards allowed ("" = valid)
		wildOff string // expected code with wildcards disabled
	}{
		{"single token", "prices", ok, ok},
		{"several tokens", "prices.AAPL.bid", ok, ok},
		{"digits dashes underscores", "room-42_b.x", ok, ok},
		{"utf-8", "préférences.€uro", ok, ok},
		{"max length", long, ok, ok},
		{"empty", "", CodeInvalidChannel, CodeInvalidChannel},
		{"too long", long + "b", CodeInvalidChannel, CodeInvalidChannel},
		{"leading dot", ".a", CodeInvalidChannel, CodeInvalidChannel},
		{"trailing dot", "a.", CodeInvalidChannel, CodeInvalidChannel},
		{"double dot", "a..b", CodeInvalidChannel, CodeInvalidChannel},
		{"only dot", ".", CodeInvalidChannel, CodeInvalidChannel},
		{"space", "a b", CodeInvalidChannel, CodeInvalidChannel},
		{"tab", "a\tb", CodeInvalidChannel, CodeInvalidChannel},
		{"newline", "a\nb", CodeInvalidChannel, CodeInvalidChannel},
		{"carriage return", "a\rb", CodeInvalidChannel, CodeInvalidChannel},
		{"NUL", "a\x00b", CodeInvalidChannel, CodeInvalidChannel},
		{"other control", "a\x1bb", CodeInvalidChannel, CodeInvalidChannel},
		{"DEL", "a\x7fb", CodeInvalidChannel, CodeInvalidChannel},
		{"invalid utf-8", "a.\xff", CodeInvalidChannel, CodeInvalidChannel},
		{"star token", "prices.*", ok, CodeWildcardsDisabled},
		{"star alone", "*", ok, CodeWildcardsDisabled},
		{"star first", "*.AAPL", ok, CodeWildcardsDisabled},
		{"star inside token", "prices.A*", CodeInvalidChannel, CodeInvalidChannel},
		{"star prefix of token", "*x.a", CodeInvalidChannel, CodeInvalidChannel},
		{"gt last", "game.>", ok, CodeWildcardsDisabled},
		{"gt alone", ">", ok, CodeWildcardsDisabled},
		{"star and gt", "a.*.>", ok, CodeWildcardsDisabled},
		{"gt not last", "a.>.b", CodeInvalidChannel, CodeInvalidChannel},
		{"gt inside token", "a.b>", CodeInvalidChannel, CodeInvalidChannel},
		{"gt alone inside token", "a.>b", CodeInvalidChannel, CodeInvalidChannel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				allow bool
				want  string
			}{{true, tt.wildOK}, {false, tt.wildOff}} {
				for _, err := range []error{Validate(tt.ch, c.allow), ValidateBytes([]byte(tt.ch), c.allow)} {
					if got := errCode(t, err); got != c.want {
						t.Errorf("Validate(%q, %v) code = %q, want %q (err %v)", tt.ch, c.allow, got, c.want, err)
					}
				}
			}
		})
	}
}

// errCode returns the Error code of err, "" for nil.
func errCode(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	if ce.Message == "" {
		t.Errorf("Error %q has no message", ce.Code)
	}
	return ce.Code
}

func TestMatches(t *testing.T) {
	tests := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a", "a.b", false},
		{"a.b", "a", false},
		{"ab", "a", false},
		{"a", "ab", false},
		{"a.*", "a.b", true},
		{"a.*", "a.b.c", false},
		{"a.*", "a", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{"*.b", "a.b", true},
		{"*.b", "a.c", false},
		{"a.*.c", "a.x.c", true},
		{">", "a", true},
		{">", "a.b.c", true},
		{"a.>", "a", false},
		{"a.>", "a.b", true},
		{"a.>", "a.b.c", true},
		{"a.>", "b.c", false},
		{"a.*.c.>", "a.x.c.d.e", true},
		{"a.*.c.>", "a.x.c", false},
		{"", "a", false},
		{"a", "", false},
		{"a.*", "a.", false},
		{"a.>", "a.", false},
		{"a.>", "a.b.", false},
		{"a.>", "a..b", false},
		{"prices.AAPL", "prices.*", false}, // wildcards only mean something in the pattern
	}
	for _, tt := range tests {
		if got := Matches(tt.pattern, tt.subject); got != tt.want {
			t.Errorf("Matches(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
		}
		// For valid input, agree with nats-server's own matcher.
		if Validate(tt.pattern, true) == nil && Validate(tt.subject, false) == nil {
			if srv := server.SubjectMatchesFilter(tt.subject, tt.pattern); srv != tt.want {
				t.Errorf("nats-server says %q matches %q = %v, table says %v", tt.subject, tt.pattern, srv, tt.want)
			}
		}
	}
}

func TestNoAllocations(t *testing.T) {
	subject := []byte("prices.NASDAQ.AAPL.bid")
	checks := map[string]func(){
		"ValidateChannel":      func() { _ = Validate("prices.*.AAPL.>", true) },
		"ValidateChannelBytes": func() { _ = ValidateBytes(subject, false) },
		"Matches":              func() { _ = Matches("prices.*.AAPL.>", "prices.NASDAQ.AAPL.bid") },
		"Covers":               func() { _ = Covers("prices.*.>", "prices.NASDAQ.*.bid") },
	}
	for name, f := range checks {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", name, n)
		}
	}
}

// refMatches is the obvious split-based matcher Matches must agree with.
func refMatches(pattern, subject string) bool {
	if pattern == "" || subject == "" {
		return false
	}
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" && i == len(pt)-1 {
			if len(st) <= i {
				return false
			}
			for _, s := range st[i:] {
				if s == "" {
					return false
				}
			}
			return true
		}
		if i >= len(st) {
			return false
		}
		if p == "*" {
			if st[i] == "" {
				return false
			}
			continue
		}
		if p != st[i] {
			return false
		}
	}
	return len(pt) == len(st)
}

func FuzzMatches(f *testing.F) {
	f.Add("prices.*", "prices.AAPL")
	f.Add("game.>", "game.1.move")
	f.Add("a.*.c.>", "a.b.c")
	f.Add(">", "x")
	f.Fuzz(func(t *testing.T, pattern, subject string) {
		got := Matches(pattern, subject)
		if want := refMatches(pattern, subject); got != want {
			t.Fatalf("Matches(%q, %q) = %v, reference says %v", pattern, subject, got, want)
		}
		if Validate(pattern, true) == nil && Validate(subject, false) == nil {
			if srv := server.SubjectMatchesFilter(subject, pattern); got != srv {
				t.Fatalf("Matches(%q, %q) = %v, nats-server says %v", pattern, subject, got, srv)
			}
		}
	})
}

func FuzzValidate(f *testing.F) {
	f.Add("prices.AAPL")
	f.Add("a.*.>")
	f.Add("a..b")
	f.Add("a.>.b")
	f.Fuzz(func(t *testing.T, ch string) {
		errWild := Validate(ch, true)
		errLit := Validate(ch, false)
		if (errWild == nil) != (ValidateBytes([]byte(ch), true) == nil) {
			t.Fatalf("ValidateChannel and ValidateChannelBytes disagree on %q", ch)
		}
		if errWild != nil {
			if errCode(t, errWild) != CodeInvalidChannel || errCode(t, errLit) != CodeInvalidChannel {
				t.Fatalf("%q: invalid with wildcards (%v) but %v without", ch, errWild, errLit)
			}
			return
		}
		// Herald's rules are stricter than NATS's: what we accept, NATS does.
		if !server.IsValidSubject(ch) {
			t.Fatalf("%q accepted but nats-server rejects it", ch)
		}
		literal := server.IsValidLiteralSubject(ch)
		if (errLit == nil) != literal {
			t.Fatalf("%q: literal per nats-server = %v, Validate(_, false) = %v", ch, literal, errLit)
		}
		if errLit != nil && errCode(t, errLit) != CodeWildcardsDisabled {
			t.Fatalf("%q: valid pattern refused with %v", ch, errLit)
		}
		if literal && !Matches(ch, ch) {
			t.Fatalf("literal %q does not match itself", ch)
		}
	})
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		a, p string
		want bool
	}{
		{"prices.>", "prices.*", true},
		{"prices.>", "prices.A.B", true},
		{"prices.>", "prices.>", true},
		{"prices.*", "prices.>", false},
		{"prices.*", "prices.AAPL", true},
		{"prices.*", "prices.*", true},
		{"prices.*", "prices", false},
		{"prices.>", "prices", false},
		{">", ">", true},
		{">", "*.>", true},
		{"*.>", ">", false},
		{"*.*", "*.>", false},
		{"*", ">", false},
		{"a.b", "a.b", true},
		{"a.b", "a.*", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"a.*.>", "a.*.c.>", true},
		{"a.b.>", "a.*.c", false},
		{"user.42.>", "user.42.inbox", true},
		{"user.42.>", "user.4.inbox", false},
		{"user.42.>", "user.420.inbox", false},
		{"", "a", false},
		{"a", "", false},
	} {
		if got := Covers(tc.a, tc.p); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.a, tc.p, got, tc.want)
		}
	}
}

func TestReserved(t *testing.T) {
	for _, ch := range []string{"_INBOX.x", "_R_.a", "_GR_.b", "$SYS.>", "$JS.API.>", "$KV.b.k", "$O.x", "$SRV.PING", "$NRG.x", "$MQTT.sess", "_x", "$"} {
		if !Reserved(ch) {
			t.Errorf("Reserved(%q) = false", ch)
		}
	}
	for _, ch := range []string{"prices.AAPL", "x._INBOX", "a.$JS", ">", "*.x", "", "INBOX.x", "JS.API"} {
		if Reserved(ch) {
			t.Errorf("Reserved(%q) = true", ch)
		}
	}
}

// FuzzCovers checks Covers against its definition by brute force: a covers p
// exactly when every subject p matches (up to one token longer than either
// pattern, over the patterns' own tokens and one token neither has) is
// matched by a. Longer subjects add nothing: past both patterns' lengths
// only a trailing '>' still matches, and it matches one extra token as well
// as many.
func FuzzCovers(f *testing.F) {
	for _, s := range [][2]string{
		{"prices.>", "prices.*"}, {"prices.*", "prices.>"}, {">", "*.>"}, {"*.>", ">"},
		{"a.*.c", "a.b.c"}, {"a.*.>", "a.b.>"}, {"*.*", "a.>"}, {"a.b", "a.b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, p string) {
		if Validate(a, true) != nil || Validate(p, true) != nil {
			return
		}
		ta, tp := strings.Split(a, "."), strings.Split(p, ".")
		if len(ta) > 5 || len(tp) > 5 {
			return // keep the enumeration small: 5 tokens is every shape
		}
		alphabet := []string{"fresh~"}
		for _, tok := range append(ta, tp...) {
			if tok != "*" && tok != ">" && !slices.Contains(alphabet, tok) {
				alphabet = append(alphabet, tok)
			}
		}
		want := true
		var subject []string
		var walk func(depth int)
		walk = func(depth int) {
			if !want {
				return
			}
			if len(subject) > 0 {
				s := strings.Join(subject, ".")
				if Matches(p, s) && !Matches(a, s) {
					want = false
					return
				}
			}
			if depth == 0 {
				return
			}
			for _, tok := range alphabet {
				subject = append(subject, tok)
				walk(depth - 1)
				subject = subject[:len(subject)-1]
			}
		}
		walk(max(len(ta), len(tp)) + 1)
		if got := Covers(a, p); got != want {
			t.Fatalf("Covers(%q, %q) = %v, brute force says %v", a, p, got, want)
		}
	})
}
