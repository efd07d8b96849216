package natstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

const (
	// serverModule is the package built into the binary: the nats-server
	// command of whatever version the caller's go.mod requires.
	serverModule = "github.com/nats-io/nats-server/v2"
	// binDirPrefix names the temporary directories binaries are built in.
	binDirPrefix = "herald-natstest-"
	binName      = "nats-server"
)

// bin is the binary built for this process.
var bin struct {
	once sync.Once
	path string
	err  error
	// dir stays open and locked for the life of the process: the lock is
	// how a later process tells that this one is gone and its binary can be
	// deleted (see removeStale). The kernel drops it at exit, even on SIGKILL.
	dir *os.File
}

// Binary returns the path of a nats-server executable built with
// `go build github.com/nats-io/nats-server/v2` from the caller's module, so
// the version is the one in its go.mod and the module cache makes the build
// work offline. The first call in a process builds it into a new temporary
// directory (this takes a while if the build cache is cold); later calls
// return the same path. A failed build fails the test with the go command's
// output: a test that needs a real server must not pass without one.
//
// A helper package cannot run code at process exit, so the directory
// outlives the process; each build first deletes the directories of earlier
// processes that have exited.
func Binary(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() { bin.path, bin.err = build() })
	if bin.err != nil {
		t.Fatalf("natstest: %v", bin.err)
	}
	return bin.path
}

func build() (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("building nats-server needs the go command: %w", err)
	}
	removeStale()
	dir, err := os.MkdirTemp("", binDirPrefix+"*")
	if err != nil {
		return "", err
	}
	if d, err := os.Open(dir); err == nil {
		if lockDir(d) == nil {
			bin.dir = d
		} else {
			d.Close()
		}
	}
	path := filepath.Join(dir, binName)
	cmd := exec.Command(goTool, "build", "-o", path, serverModule)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build %s: %v\n%s", serverModule, err, out)
	}
	return path, nil
}

// removeStale deletes the binaries earlier test processes built. A
// directory is stale once its binary is complete (before that it may be
// another process's build in progress) and no live process holds its lock.
// Where locks are not supported nothing is deleted.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, binName)); err != nil {
			continue
		}
		d, err := os.Open(dir)
		if err != nil {
			continue // another user's, for one
		}
		if lockDir(d) == nil {
			os.RemoveAll(dir)
		}
		d.Close()
	}
}
