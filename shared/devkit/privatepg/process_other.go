//go:build unix && !linux

package privatepg

import "syscall"

// setPdeathsig does nothing: only Linux can tie the child's life to ours.
// [Server.Stop] is what cleans up here.
func setPdeathsig(*syscall.SysProcAttr) {}

// dirProcs finds nothing: without /proc there is no cheap way to list the
// processes working in a directory. Backends left by a killed postmaster
// exit by themselves once they notice it is gone.
func dirProcs(string) []int { return nil }
