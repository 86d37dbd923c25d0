package childproc

import "syscall"

// setDeathsig makes the kernel SIGKILL the child when the thread that
// forked it dies; see [Start] for why that thread lives as long as the
// child.
func setDeathsig(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
