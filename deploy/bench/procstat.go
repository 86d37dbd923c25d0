package main

import (
	"fmt"
	"time"

	"github.com/prometheus/procfs"
)

// clockTick is the unit of CPU times in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture Go supports (procfs assumes the same).
const clockTick = 10 * time.Millisecond

// proc opens /proc/<pid> through procfs.
func proc(pid int) (procfs.Proc, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return procfs.Proc{}, err
	}
	return fs.Proc(pid)
}

// status returns /proc/<pid>/status.
func status(pid int) (procfs.ProcStatus, error) {
	p, err := proc(pid)
	if err != nil {
		return procfs.ProcStatus{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	s, err := p.NewStatus()
	if err != nil {
		return procfs.ProcStatus{}, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	return s, nil
}

// peakRSS returns the peak resident set size (VmHWM) of pid in bytes.
func peakRSS(pid int) (int64, error) {
	s, err := status(pid)
	return int64(s.VmHWM), err
}

// currentRSS returns the resident set size (VmRSS) of pid in bytes.
func currentRSS(pid int) (int64, error) {
	s, err := status(pid)
	return int64(s.VmRSS), err
}

// cpuTime returns the CPU time pid has used, user plus system, including
// that of its children that have exited and been reaped (so a postmaster
// accounts for its finished backends).
func cpuTime(pid int) (time.Duration, error) {
	p, err := proc(pid)
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	s, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	ticks := int64(s.UTime) + int64(s.STime) + int64(s.CUTime) + int64(s.CSTime)
	return time.Duration(ticks) * clockTick, nil
}

// dirProcs returns the processes whose working directory is dir. Every
// postgres process works in its data directory, and its backends are in
// sessions of their own, so this is how all of a server's processes are
// found.
func dirProcs(dir string) []int {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil
	}
	var pids []int
	for _, p := range procs {
		if cwd, err := p.Cwd(); err == nil && cwd == dir {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// groupCPU returns the CPU time of the processes in pids, skipping those
// that have gone.
func groupCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		if d, err := cpuTime(pid); err == nil {
			total += d
		}
	}
	return total
}

// openFilesLimit returns the soft limit on open files of pid.
func openFilesLimit(pid int) (uint64, error) {
	p, err := proc(pid)
	if err != nil {
		return 0, fmt.Errorf("read limits of pid %d: %w", pid, err)
	}
	l, err := p.Limits()
	if err != nil {
		return 0, fmt.Errorf("read limits of pid %d: %w", pid, err)
	}
	return min(l.OpenFiles, 1<<62), nil // unlimited is all ones
}

// machineTicks is the machine-wide CPU time split of /proc/stat, in
// seconds.
type machineTicks struct {
	total, idle, iowait float64
}

// readMachineTicks reads the aggregate "cpu" line of /proc/stat.
func readMachineTicks() (machineTicks, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return machineTicks{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	st, err := fs.Stat()
	if err != nil {
		return machineTicks{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	c := st.CPUTotal
	// Guest time is already counted in user.
	return machineTicks{
		total:  c.User + c.Nice + c.System + c.Idle + c.Iowait + c.IRQ + c.SoftIRQ + c.Steal,
		idle:   c.Idle,
		iowait: c.Iowait,
	}, nil
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return "unknown"
	}
	infos, err := fs.CPUInfo()
	if err != nil || len(infos) == 0 || infos[0].ModelName == "" {
		return "unknown"
	}
	return infos[0].ModelName
}

// memTotal returns MemTotal of /proc/meminfo in bytes, or 0.
func memTotal() int64 {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0
	}
	m, err := fs.Meminfo()
	if err != nil || m.MemTotalBytes == nil {
		return 0
	}
	return int64(*m.MemTotalBytes)
}

// loadAvg returns the three load averages of /proc/loadavg, or "unknown".
func loadAvg() string {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return "unknown"
	}
	l, err := fs.LoadAvg()
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.2f %.2f %.2f", l.Load1, l.Load5, l.Load15)
}

// busy returns the share of CPU time, in percent of all cores, that was
// busy and that was waiting for I/O between two readings.
func busy(before, after machineTicks) (busyPct, iowaitPct float64) {
	dt := after.total - before.total
	if dt <= 0 {
		return 0, 0
	}
	idle := after.idle - before.idle
	iowait := after.iowait - before.iowait
	return 100 * (dt - idle - iowait) / dt, 100 * iowait / dt
}

// backgroundLoad measures how many cores other processes keep busy over d,
// before the run starts anything.
func backgroundLoad(d time.Duration, cpus int) (float64, error) {
	before, err := readMachineTicks()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	after, err := readMachineTicks()
	if err != nil {
		return 0, err
	}
	pct, _ := busy(before, after)
	return pct / 100 * float64(cpus), nil
}
