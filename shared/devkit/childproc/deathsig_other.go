//go:build unix && !linux

package childproc

import "syscall"

// setDeathsig does nothing: only Linux can tie the child's life to ours.
// Stopping or killing the child is what cleans up here.
func setDeathsig(*syscall.SysProcAttr) {}
