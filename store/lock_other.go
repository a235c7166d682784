//go:build !unix && !windows

package store

import (
	"errors"
	"os"
)

// lockFile cannot lock on this platform: the store refuses to open a data
// directory rather than risk two writers in it.
func lockFile(*os.File) error {
	return errors.New("no file locking on this platform")
}

func errLockHeld(error) bool { return false }
