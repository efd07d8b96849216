package bench

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// The floor listens itself, its readers connect from a child process,
// and every frame written to every socket is read and accounted as a
// fanout delivery would be.
func TestFloor(t *testing.T) {
	for _, raw := range []bool{false, true} {
		name, writers := "json", 1
		if raw {
			name, writers = "raw, two writers", 2
		}
		t.Run(name, func(t *testing.T) {
			const conns, messages = 200, 10
			res := runT(t, Config{
				Scenario:     Floor,
				Conns:        conns,
				Raw:          raw,
				Messages:     messages,
				Rate:         50,
				Duration:     10 * time.Second,
				Timeout:      30 * time.Second,
				Loops:        1,
				Dialers:      8,
				Writers:      writers,
				ShardCommand: testShardCommand,
			})
			fl := res.Floor
			if fl == nil || fl.Sockets != conns || fl.Passes != messages || fl.Writes != conns*messages || fl.ReaderProcs != 1 {
				t.Fatalf("floor %+v", fl)
			}
			if fl.PassMedian <= 0 || fl.PassMax < fl.PassMedian || fl.ThreadMicrosPerWrite <= 0 || fl.InPassMicrosPerWrite <= 0 {
				t.Fatalf("pass times and cpu: %+v", fl)
			}
			if !strings.HasPrefix(fl.Listen, "127.0.0.1:") || res.URL != "ws://"+fl.Listen+"/ws" {
				t.Errorf("listen %q, url %q", fl.Listen, res.URL)
			}
			// The frame Herald would send: its header, then the envelope
			// around the 64-byte payload (or the bare payload).
			want := 2 + 64
			if !raw {
				want += len(`{"channel":"bench.123456.0","data":}`)
			}
			if fl.FrameBytes != want {
				t.Errorf("frame of %d bytes, want %d", fl.FrameBytes, want)
			}
			f := res.Fanout
			if f == nil || f.Published != messages || f.Expected != conns*messages || f.Delivered != conns*messages ||
				f.Missing+f.Duplicated+f.OutOfOrder != 0 || f.Latency.Count != conns*messages || f.PerSecond <= 0 {
				t.Fatalf("readers: %+v", f)
			}
			if cpu := res.Server.CPU; cpu == nil || cpu.Unit != "write" || cpu.Count != conns*messages || cpu.Seconds <= 0 {
				t.Fatalf("writer cpu %+v", cpu)
			}
			if !strings.Contains(res.Server.Source, "getrusage") {
				t.Errorf("source %q", res.Server.Source)
			}
		})
	}
}

func TestFloorNeedsAChildProcess(t *testing.T) {
	cfg := Config{Scenario: Floor, Conns: 10}
	cfg.setDefaults()
	if _, err := cfg.check(); err == nil || !strings.Contains(err.Error(), "ShardCommand") {
		t.Fatalf("%v", err)
	}
}

// writeAll stops at the first socket it cannot write, and says which.
func TestWriteAllFailsOnAnError(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	bad, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(bad[0])
	syscall.Close(bad[1])
	frame := appendFloorFrame(nil, "c", []byte(`{"seq":1}`), false)
	n, err := writeAll([]int{fds[0], bad[0], fds[0]}, frame)
	if n != 1 || err == nil {
		t.Fatalf("wrote %d, err %v", n, err)
	}
	got := make([]byte, 64)
	k, _ := syscall.Read(fds[1], got)
	h, hn, err := codec.ParseHeader(got[:k])
	if err != nil || h.OpCode != ws.OpText || string(got[hn:k]) != `{"channel":"c","data":{"seq":1}}` {
		t.Fatalf("frame %q: %v", got[:k], err)
	}
}

// The floor's listener answers the upgrade as a server must, and refuses
// what is not one.
func TestFloorServerUpgrade(t *testing.T) {
	f, err := startFloorServer("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if _, err := startFloorServer("0.0.0.0:0"); err == nil {
		t.Error("a floor listening beyond loopback")
	}
	c, err := net.Dial("tcp", f.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	_, _ = c.Write([]byte("GET /ws?channel=x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n\r\n"))
	buf := make([]byte, 512)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := c.Read(buf)
	resp, err := parseUpgradeResponse(buf[:n], []byte(key), make([]byte, 64))
	if err != nil || resp.status != 101 {
		t.Fatalf("%q: %v", buf[:n], err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(f.sockets()) != 1; {
		if time.Now().After(deadline) {
			t.Fatal("the upgraded socket never reached the writer")
		}
		time.Sleep(time.Millisecond)
	}
	bad, err := net.Dial("tcp", f.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, _ = bad.Write([]byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
	_ = bad.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ = bad.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 400 ") {
		t.Fatalf("%q", buf[:n])
	}
}
