package privatepg

import (
	"os"
	"path/filepath"

	"github.com/prometheus/procfs"
)

// dirProcs returns the live (non-zombie) processes whose working directory
// is dir, other than us. Every postgres process works in its data
// directory, which makes this the one reliable way to find them all: each
// backend calls setsid, so the process group holds only the postmaster, and
// parentage is lost once the postmaster dies. Zombies are skipped: they
// hold no shared memory, and in a container whose init does not reap
// orphans they never go away. The kernel reports working directories with
// symbolic links resolved, so dir is resolved too.
func dirProcs(dir string) []int {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	self := os.Getpid()
	var pids []int
	for _, p := range procs {
		if p.PID == self {
			continue
		}
		if cwd, err := p.Cwd(); err != nil || cwd != dir {
			continue
		}
		// A process gone since the listing counts as a zombie.
		if st, err := p.Stat(); err != nil || st.State == "Z" || st.State == "X" {
			continue
		}
		pids = append(pids, p.PID)
	}
	return pids
}
