package deflate

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gobwas/ws"

	"github.com/herald-ws/herald/codec"
)

// jsonTick is the kind of message Herald pushes.
func jsonTick(n int) []byte {
	var b bytes.Buffer
	r := rand.New(rand.NewPCG(1, 2))
	for b.Len() < n {
		b.WriteString(`{"channel":"prices.AAPL","data":{"sym":"AAPL","bid":`)
		b.WriteString(strings.Repeat("1", 1+r.IntN(3)))
		b.WriteString(`.25,"ask":190.5,"ts":1767225600123}}`)
	}
	return b.Bytes()[:n]
}

// stdInflate is an independent reader: the standard library's, with the
// sync tail put back as RFC 7692 section 7.2.2 says.
func stdInflate(t *testing.T, compressed []byte) []byte {
	t.Helper()
	r := stdflate.NewReader(io.MultiReader(bytes.NewReader(compressed), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("compress/flate cannot read it: %v", err)
	}
	return out
}

func TestCompressRoundTrip(t *testing.T) {
	random := make([]byte, 70000)
	for i := range random {
		random[i] = byte(rand.Uint32())
	}
	for _, tt := range []struct {
		name    string
		level   int
		bits    uint8
		payload []byte
	}{
		{"empty", 0, 15, nil},
		{"one byte", 0, 15, []byte("x")},
		{"json 1 KiB", 0, 15, jsonTick(1024)},
		{"json 64 B", 0, 15, jsonTick(64)},
		{"json 200 KiB level 9", 9, 15, jsonTick(200 << 10)},
		{"huffman only", MinLevel, 15, jsonTick(4096)},
		{"random 70 KB", 0, 15, random},
		{"window 8", 0, 8, jsonTick(8192)},
		{"window 12", 0, 12, jsonTick(8192)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCompressor(tt.level, tt.bits)
			if err != nil {
				t.Fatal(err)
			}
			z := c.Compress(nil, tt.payload)
			if got := stdInflate(t, z); !bytes.Equal(got, tt.payload) {
				t.Fatalf("compress/flate inflates %d bytes, want the %d sent", len(got), len(tt.payload))
			}
			f := NewInflater()
			got, err := f.Inflate(nil, z, int64(len(tt.payload)))
			if err != nil || !bytes.Equal(got, tt.payload) {
				t.Fatalf("Inflate: %d bytes, %v", len(got), err)
			}
			if len(tt.payload) >= 1024 && tt.bits == 15 && tt.name[:4] == "json" && len(z)*3 > len(tt.payload) {
				t.Errorf("JSON compressed to %d of %d bytes: under 3x", len(z), len(tt.payload))
			}
			frame := c.AppendFrame(nil, ws.OpText, tt.payload)
			h, hn, err := codec.ParseHeader(frame)
			if err != nil || h.Rsv != 4 || !h.Fin || h.OpCode != ws.OpText || int(h.Length) != len(z) || !bytes.Equal(frame[hn:], z) {
				t.Fatalf("frame header %+v (%v), want RSV1, FIN, text, length %d", h, err, len(z))
			}
		})
	}
}

// TestInflateStdlibOutput reads what other implementations send: the
// standard library's compressor at several levels, with the tail dropped.
func TestInflateStdlibOutput(t *testing.T) {
	msg := jsonTick(50000)
	for _, level := range []int{stdflate.NoCompression, stdflate.BestSpeed, stdflate.DefaultCompression, stdflate.BestCompression} {
		var b bytes.Buffer
		w, _ := stdflate.NewWriter(&b, level)
		w.Write(msg)
		w.Flush()
		z := bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
		got, err := NewInflater().Inflate(nil, z, 1<<20)
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("level %d: %d bytes, %v", level, len(got), err)
		}
	}
}

func TestInflateLimits(t *testing.T) {
	// A zip bomb: 64 MiB of zeros in a few tens of kilobytes.
	c, _ := NewCompressor(9, 15)
	bomb := c.Compress(nil, make([]byte, 64<<20))
	if len(bomb) > 128<<10 {
		t.Fatalf("bomb is %d bytes; the test wants a small frame", len(bomb))
	}
	corrupt := append([]byte{0xff, 0xff, 0xff}, bomb[:100]...)
	truncated := c.Compress(nil, jsonTick(5000))
	truncated = truncated[:len(truncated)/2]
	for _, tt := range []struct {
		name  string
		z     []byte
		limit int64
		want  error
		max   int // most bytes Inflate may have produced
	}{
		{"bomb over 1 MiB", bomb, 1 << 20, codec.ErrMessageTooBig, 1<<20 + 1},
		{"bomb over 10 bytes", bomb, 10, codec.ErrMessageTooBig, 11},
		{"exactly the limit", c.Compress(nil, make([]byte, 4096)), 4096, nil, 4096},
		{"one over the limit", c.Compress(nil, make([]byte, 4097)), 4096, codec.ErrMessageTooBig, 4097},
		{"corrupt", corrupt, 1 << 20, ErrCorrupt, 1 << 20},
		{"truncated", truncated, 1 << 20, ErrCorrupt, 1 << 20},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := NewInflater()
			out, err := f.Inflate(nil, tt.z, tt.limit)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if len(out) > tt.max {
				t.Errorf("produced %d bytes, want at most %d", len(out), tt.max)
			}
			// The Inflater is reusable after any outcome.
			again, err := f.Inflate(nil, c.Compress(nil, []byte("ok")), 10)
			if err != nil || string(again) != "ok" {
				t.Errorf("reuse: %q, %v", again, err)
			}
		})
	}
}

func TestNewCompressorRejects(t *testing.T) {
	for _, tt := range []struct {
		level int
		bits  uint8
	}{{0, 7}, {0, 16}, {10, 15}, {-1, 15}, {-3, 15}} {
		if _, err := NewCompressor(tt.level, tt.bits); err == nil {
			t.Errorf("NewCompressor(%d, %d) accepted", tt.level, tt.bits)
		}
	}
}

func TestAllocs(t *testing.T) {
	msg := jsonTick(1024)
	c, _ := NewCompressor(0, 15)
	f := NewInflater()
	dst := make([]byte, 0, 4096)
	out := make([]byte, 0, 4096)
	z := c.Compress(nil, msg)
	if n := testing.AllocsPerRun(100, func() { dst = c.AppendFrame(dst[:0], ws.OpText, msg) }); n != 0 {
		t.Errorf("AppendFrame: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { out, _ = f.Inflate(out[:0], z, 1<<20) }); n != 0 {
		t.Errorf("Inflate: %v allocations, want 0", n)
	}
}

func BenchmarkCompress1KiB(b *testing.B) {
	msg := jsonTick(1024)
	c, _ := NewCompressor(0, 15)
	dst := make([]byte, 0, 4096)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		dst = c.AppendFrame(dst[:0], ws.OpText, msg)
	}
	b.ReportMetric(float64(len(dst))/float64(len(msg)), "wire/plain")
}

func BenchmarkInflate1KiB(b *testing.B) {
	msg := jsonTick(1024)
	c, _ := NewCompressor(0, 15)
	z := c.Compress(nil, msg)
	f := NewInflater()
	out := make([]byte, 0, 4096)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = f.Inflate(out[:0], z, 1<<20)
	}
}
