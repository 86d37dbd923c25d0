package privatepg

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// setPdeathsig makes the kernel SIGKILL the child when the thread that
// forked it dies; see spawn for why that thread lives as long as the child.
// Credentials are switched before the death signal is armed, so the switch
// to an unprivileged user does not clear it.
func setPdeathsig(attr *syscall.SysProcAttr) {
	attr.Pdeathsig = syscall.SIGKILL
}

// dirProcs returns the live (non-zombie) processes whose working directory
// is dir, other than us. Every postgres process works in its data
// directory, which makes this the one reliable way to find them all: each
// backend calls setsid, so the process group holds only the postmaster, and
// parentage is lost once the postmaster dies. Zombies are skipped: they
// hold no shared memory, and in a container whose init does not reap
// orphans they never go away.
func dirProcs(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err != nil || cwd != dir {
			continue
		}
		if zombie(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// zombie reports whether pid has exited but not been reaped, or is gone.
func zombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return false
	}
	fields := bytes.Fields(stat[i+1:])
	return len(fields) > 0 && (string(fields[0]) == "Z" || string(fields[0]) == "X")
}
