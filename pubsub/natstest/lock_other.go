//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package natstest

import (
	"errors"
	"os"
)

// lockDir is not supported here, so no binary is ever taken for stale.
func lockDir(*os.File) error { return errors.ErrUnsupported }
