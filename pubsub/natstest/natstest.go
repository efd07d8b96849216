// Package natstest runs nats-server in a separate process for tests, the
// way net/http/httptest runs HTTP servers in-process.
//
// It exists for tests of packages that need a NATS server outside their own
// process: one that can be SIGKILLed and restarted on the same port to
// reproduce an outage as clients see it (no goodbye, then a server that
// knows nothing of their subscriptions), or one that several Herald
// instances in one test share. An embedded server (nats-server/v2/server)
// can do neither: it lives and dies with the test process and always shuts
// down politely.
//
// The server binary is built from the nats-server module version in the
// caller's go.mod (see Binary), so it works offline and matches the NATS
// code the rest of the test binary is compiled against.
package natstest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-ws/herald/engine/enginetest"
)

// readyTimeout bounds how long Start, StartOn and Restart wait for the
// server to accept clients.
const readyTimeout = 15 * time.Second

// serverSeq numbers servers within the process, for unique names.
var serverSeq atomic.Int64

// Server is a nats-server process listening on a loopback port. Its methods
// may be called from any goroutine, except that StartOn, Start and Restart
// report failures with t.Fatal and so belong on the test's goroutine.
type Server struct {
	t testing.TB
	// name is the server's server_name: the readiness check reads it back
	// from the INFO line to be sure the port is held by this process and
	// not by something that grabbed it meanwhile.
	name string
	out  *enginetest.Buffer // stdout and stderr of every run, logged if the test fails

	mu     sync.Mutex
	port   int           // fixed once the first run listens
	config string        // path of the configuration file; "" for none
	cmd    *exec.Cmd     // nil while killed
	done   chan struct{} // closed once cmd has exited
}

// Start runs a nats-server on a free loopback port chosen by the server
// itself (so no other process can take the port between choosing it and
// listening on it) and waits until it accepts clients. The server is
// killed when the test ends; if the test failed, its output is logged.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartOn(t, 0)
}

// StartOn is Start on a given port; 0 lets the server choose. A fixed port
// lets a test point clients at an address before any server listens there
// (see FreePort).
func StartOn(t testing.TB, port int) *Server {
	t.Helper()
	return start(t, port, "")
}

// StartConfig is Start with a nats-server configuration file of the given
// contents (accounts, users and their permissions, limits...): the things
// only a configuration file sets. The listen address, port and server name
// stay natstest's (command-line flags win over the file).
func StartConfig(t testing.TB, config string) *Server {
	t.Helper()
	return start(t, 0, writeConfig(t, config))
}

// SetConfig replaces the configuration file the next Restart starts with,
// the way an operator changes a server's configuration: the running
// process keeps the old one.
func (s *Server) SetConfig(config string) {
	s.t.Helper()
	path := writeConfig(s.t, config)
	s.mu.Lock()
	s.config = path
	s.mu.Unlock()
}

// writeConfig writes config to a new file in the test's temporary
// directory and returns its path.
func writeConfig(t testing.TB, config string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "nats-server-*.conf")
	if err != nil {
		t.Fatalf("natstest: write configuration: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(config); err != nil {
		t.Fatalf("natstest: write configuration: %v", err)
	}
	return f.Name()
}

func start(t testing.TB, port int, config string) *Server {
	t.Helper()
	s := &Server{
		t:      t,
		name:   fmt.Sprintf("natstest-%d-%d", os.Getpid(), serverSeq.Add(1)),
		out:    &enginetest.Buffer{},
		port:   port,
		config: config,
	}
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("natstest: output of nats-server %s:\n%s", s.name, s.out)
		}
	})
	s.start()
	return s
}

// URL is the server's client URL, nats://127.0.0.1:PORT. It stays the same
// across Kill and Restart.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Kill SIGKILLs the server and waits for the process to exit: no goodbye to
// its clients, the way a crash or a lost machine looks to them. Killing a
// server that is not running does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port, killing it first if it
// is still running, and waits until it accepts clients. The new process has
// no memory of the old one: no subscriptions, no connections.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// start runs one nats-server process and waits until it answers on its port.
func (s *Server) start() {
	s.t.Helper()
	bin := Binary(s.t)
	s.mu.Lock()
	defer s.mu.Unlock()

	args := []string{"--addr", "127.0.0.1", "--name", s.name}
	if s.config != "" {
		args = append(args, "--config", s.config)
	}
	portsDir := ""
	if s.port == 0 {
		// -1 is nats-server's "any free port" (0 means its default, 4222);
		// the ports file tells which one it took.
		portsDir = s.t.TempDir()
		args = append(args, "--port", "-1", "--ports_file_dir", portsDir)
	} else {
		args = append(args, "--port", strconv.Itoa(s.port))
	}
	fmt.Fprintf(s.out, "--- natstest: %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("natstest: start nats-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-done:
			s.cmd = nil
			s.t.Fatalf("natstest: nats-server exited before accepting clients (%v); output:\n%s", cmd.ProcessState, s.out)
		default:
		}
		if s.port == 0 {
			s.port = readPortsFile(portsDir)
		}
		if s.port != 0 && answers(s.port, s.name) {
			return
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			s.cmd = nil
			s.t.Fatalf("natstest: nats-server %s not accepting clients after %v; output:\n%s", s.name, readyTimeout, s.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPortsFile returns the client port from the ports file nats-server
// writes into dir once it listens, or 0 while there is none (or it is only
// partly written).
func readPortsFile(dir string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "*.ports"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var ports struct{ Nats []string }
		if json.Unmarshal(b, &ports) != nil || len(ports.Nats) == 0 {
			continue
		}
		u, err := url.Parse(ports.Nats[0])
		if err != nil {
			continue
		}
		if p, err := strconv.Atoi(u.Port()); err == nil && p > 0 {
			return p
		}
	}
	return 0
}

// answers reports whether a NATS server named name accepts clients on
// 127.0.0.1:port: it greets every connection with an INFO line.
func answers(port int, name string) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 250*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false
	}
	info, ok := strings.CutPrefix(line, "INFO ")
	if !ok {
		return false
	}
	var v struct {
		Name string `json:"server_name"`
	}
	return json.Unmarshal([]byte(info), &v) == nil && v.Name == name
}

// FreePort returns a loopback TCP port nothing listens on at the moment of
// the call, for tests that need an address with no server behind it (yet).
// Another process may take the port before the test uses it; Start avoids
// that race where it can.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
