package natstest

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// roundTrip publishes one message through the server at url and receives
// it, proving the server works end to end.
func roundTrip(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("natstest.ping")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("natstest.ping", []byte("pong")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "pong" {
		t.Fatalf("round trip through %s: %v, %v", url, m, err)
	}
}

func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	url := s.URL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") {
		t.Fatalf("URL() = %q, want nats://127.0.0.1:<chosen port>", url)
	}
	roundTrip(t, url)

	s.Kill()
	s.Kill() // killing a dead server is a no-op
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), time.Second); err == nil {
		t.Fatalf("something still listens on %s after Kill", url)
	}

	s.Restart()
	if s.URL() != url {
		t.Fatalf("URL() after Restart = %q, want %q", s.URL(), url)
	}
	roundTrip(t, url)
	s.Restart() // restarting a running server replaces it
	roundTrip(t, url)
}

func TestStartOnFixedPort(t *testing.T) {
	port := FreePort(t)
	s := StartOn(t, port)
	if want := "nats://127.0.0.1:" + strconv.Itoa(port); s.URL() != want {
		t.Fatalf("URL() = %q, want %q", s.URL(), want)
	}
	roundTrip(t, s.URL())
}

func TestBinaryIsCached(t *testing.T) {
	a, b := Binary(t), Binary(t)
	if a != b {
		t.Fatalf("Binary() = %q then %q, want one build per process", a, b)
	}
	if fi, err := os.Stat(a); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("Binary() = %q: %v, mode %v", a, err, fi.Mode())
	}
}

// TestRemoveStale: binaries of exited processes go, the ones in use and
// builds in progress stay.
func TestRemoveStale(t *testing.T) {
	Binary(t) // this process's own directory, which must survive
	mkdir := func(withBinary bool) string {
		t.Helper()
		dir, err := os.MkdirTemp("", binDirPrefix+"*")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if withBinary {
			if err := os.WriteFile(filepath.Join(dir, binName), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	stale := mkdir(true)
	building := mkdir(false)
	inUse := mkdir(true)
	d, err := os.Open(inUse)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := lockDir(d); errors.Is(err, errors.ErrUnsupported) {
		t.Skip("no directory locks on this platform: nothing is ever removed")
	} else if err != nil {
		t.Fatal(err)
	}

	removeStale()
	for _, c := range []struct {
		dir  string
		want bool
	}{{stale, false}, {building, true}, {inUse, true}, {filepath.Dir(Binary(t)), true}} {
		_, err := os.Stat(c.dir)
		if exists := err == nil; exists != c.want {
			t.Errorf("%s exists = %v, want %v (%v)", c.dir, exists, c.want, err)
		}
	}
}

func TestFreePortIsFree(t *testing.T) {
	port := FreePort(t)
	_, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial the free port: %v, want connection refused", err)
	}
}

// TestStartConfig: the configuration file is in force (a user is required),
// and SetConfig takes effect at the next Restart only, on the same port.
func TestStartConfig(t *testing.T) {
	s := StartConfig(t, `authorization { users = [ { user: alice, password: one } ] }`)
	host := strings.TrimPrefix(s.URL(), "nats://")
	tests := []struct{ name, url string }{
		{"no user", s.URL()},
		{"alice", "nats://alice:one@" + host},
		{"bob", "nats://bob:two@" + host},
	}
	check := func(t *testing.T, want map[string]bool) {
		t.Helper()
		for _, tt := range tests {
			nc, err := nats.Connect(tt.url, nats.Timeout(5*time.Second), nats.NoReconnect())
			if err == nil {
				nc.Close()
			}
			if (err == nil) != want[tt.name] {
				t.Errorf("%s: connect err = %v, want ok %v", tt.name, err, want[tt.name])
			}
		}
	}
	check(t, map[string]bool{"alice": true})
	roundTrip(t, "nats://alice:one@"+host)

	s.SetConfig(`authorization { users = [ { user: bob, password: two } ] }`)
	check(t, map[string]bool{"alice": true}) // still the old process
	s.Restart()
	if got := strings.TrimPrefix(s.URL(), "nats://"); got != host {
		t.Fatalf("URL after Restart = %q, want the same port %q", got, host)
	}
	check(t, map[string]bool{"bob": true})
}
