//go:build linux || darwin

package gateway

import (
	"fmt"
	"syscall"
)

// raiseOpenFiles sets the soft RLIMIT_NOFILE to the hard one and returns
// the soft limit before and after, and the hard limit. The Go runtime has
// already done the same at start on Linux; doing it here makes the outcome
// certain and visible in the log, whatever started the process.
func raiseOpenFiles() (before, after, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	before, hard = lim.Cur, lim.Max
	if lim.Cur == lim.Max {
		return before, before, hard, nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return before, before, hard, fmt.Errorf("set RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	return before, lim.Cur, hard, nil
}
