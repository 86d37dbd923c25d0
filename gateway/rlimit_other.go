//go:build !(linux || darwin)

package gateway

import "errors"

// raiseOpenFiles reports that this system's open files limit is not
// managed here.
func raiseOpenFiles() (before, after, hard uint64, err error) {
	return 0, 0, 0, errors.New("no RLIMIT_NOFILE on this system")
}
