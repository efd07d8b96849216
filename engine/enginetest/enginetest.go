// Package enginetest is the one set of helpers for tests that run a real
// engine: a server on a free loopback port that stops with the test, a
// bounded wait for a condition, and a buffer goroutines may share. It is
// imported by tests only (and by the test-helper packages of others, such
// as pubsub/natstest).
package enginetest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/herald-ws/herald/engine"
)

// Start runs a real engine on a free loopback port with cfg (two loops
// unless it says otherwise, and a silent logger unless it has one), and
// stops it when the test ends.
func Start(t testing.TB, cfg engine.Config) *engine.Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return srv
}

// WaitFor polls cond until it holds, failing the test if bound passes
// first. Tests wait on what the server does, never sleep for it.
func WaitFor(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bound, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
