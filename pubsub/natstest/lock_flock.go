//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package natstest

import (
	"os"
	"syscall"
)

// lockDir takes an exclusive lock on the open directory d without waiting.
// It fails while any other open file description holds one, in this process
// or another; the kernel releases the lock when its holder exits.
func lockDir(d *os.File) error {
	return syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
