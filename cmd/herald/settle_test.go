package main

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// After a burst of connections and a quiet second, memory is collected
// once; without new connections it is left alone.
func TestSettleMemoryAfterAConnectionBurst(t *testing.T) {
	h := startTestHerald(t, heraldConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go settleMemory(ctx, h.srv, slog.New(slog.NewTextHandler(io.Discard, nil)))

	forced := func() uint32 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.NumForcedGC
	}
	before := forced()
	for range settleBurst {
		c := mustDial(t, h.srv.Addr())
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET /ws?channel=settle HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the burst to be upgraded", func() bool { return h.srv.Stats().Upgraded == settleBurst })
	waitFor(t, 5*time.Second, "a collection after the burst", func() bool { return forced() > before })
	after := forced()
	time.Sleep(3 * settleQuiet)
	if got := forced(); got != after {
		t.Fatalf("%d more collections with no new connections, want none", got-after)
	}
}
