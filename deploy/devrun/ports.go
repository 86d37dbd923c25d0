package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// errPortInUse marks a port the runner needs that another process holds.
var errPortInUse = errors.New("port in use")

// checkPortFree fails with [errPortInUse] when addr cannot be listened on
// because another process holds it. what names the user of the port and hint
// says what to do about it. Someone may still take the port between this
// check and its use; the check only exists to turn the common case into a
// clear message.
func checkPortFree(addr, what, hint string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			_, port, _ := net.SplitHostPort(addr)
			return fmt.Errorf("%w: %s needs %s but another process listens there (`ss -ltnp 'sport = :%s'` shows which); %s",
				errPortInUse, what, addr, port, hint)
		}
		return fmt.Errorf("check that %s is free for %s: %w", addr, what, err)
	}
	return ln.Close()
}

// leftoverPostmaster returns the pid of a postgres still running on the data
// directory dir, as when an earlier runner was killed before it could stop
// it, or 0.
func leftoverPostmaster(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	pid, err := strconv.Atoi(string(bytes.TrimSpace(first)))
	if err != nil || pid <= 0 {
		return 0
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0
	}
	return pid
}
