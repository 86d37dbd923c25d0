//go:build !linux

package e2e

import "syscall"

// childAttr returns nil: only Linux can tie a child's life to ours. The
// tests' cleanups stop the programs they start.
func childAttr() *syscall.SysProcAttr { return nil }
