package e2e

import "syscall"

// childAttr makes the kernel SIGKILL a program under test when the thread
// that started it dies, so a test binary that crashes or is killed leaves
// no gateway or worker behind. The starting thread stays locked until the
// child is reaped (see startProc).
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
