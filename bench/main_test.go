package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
)

// A run with child shards re-executes its ShardCommand, which in these
// tests is the test binary itself: with ShardEnv set, this process is a
// child shard and runs no tests.
func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(ShardEnv); ok {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if err := RunShard(context.Background(), spec, os.Stdin, os.Stdout, log); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testShardCommand starts a child shard: this test binary, running no
// tests.
func testShardCommand(ctx context.Context) *exec.Cmd {
	return exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
}
