package main

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/procfs"

	"github.com/jetline/jetline/shared/devkit/privatepg"
)

// clockTick is the unit of CPU times in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture Go supports (procfs assumes the same).
const clockTick = 10 * time.Millisecond

// benchProcName names the bench's own process, which hosts NATS and the
// senders, in the usage table.
const benchProcName = "bench (NATS + senders)"

// procUsage is one process's (or process group's) share of the run.
type procUsage struct {
	Name string `json:"name"`
	PID  int    `json:"pid,omitempty"`
	// CPUSeconds is user plus system time during the window; Cores is
	// that divided by the window (1.0 = one core busy throughout).
	CPUSeconds float64 `json:"cpu_seconds"`
	Cores      float64 `json:"cores"`
	// PeakRSS is VmHWM in bytes, read just before stopping; 0 when not
	// measured.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
}

// usageSample is the CPU time used so far by each program, Postgres and
// the bench itself, and the machine's.
type usageSample struct {
	at      time.Time
	cpu     map[string]time.Duration
	machine machineTicks
}

// sampleUsage reads the CPU time of programs, of pg's processes unless it
// is nil, and of the bench.
func sampleUsage(programs []*child, pg *privatepg.Server) (usageSample, error) {
	s := usageSample{cpu: map[string]time.Duration{}}
	var err error
	if s.machine, err = readMachineTicks(); err != nil {
		return s, err
	}
	s.at = time.Now()
	for _, c := range programs {
		if s.cpu[c.name], err = cpuTime(c.pid); err != nil {
			return s, err
		}
	}
	if pg != nil {
		s.cpu["postgres"] = postgresCPU(pg)
	}
	s.cpu[benchProcName], err = cpuTime(os.Getpid())
	return s, err
}

// usage turns two samples into the usage table: programs, then Postgres
// if sampled, then the bench.
func usage(before, after usageSample, programs []*child) []procUsage {
	window := after.at.Sub(before.at).Seconds()
	var out []procUsage
	add := func(name string, pid int) {
		if _, ok := after.cpu[name]; ok {
			d := (after.cpu[name] - before.cpu[name]).Seconds()
			out = append(out, procUsage{Name: name, PID: pid, CPUSeconds: d, Cores: d / window})
		}
	}
	for _, c := range programs {
		add(c.name, c.pid)
	}
	add("postgres", 0)
	add(benchProcName, os.Getpid())
	return out
}

// rss returns the resident set size (VmRSS) of pid and its peak (VmHWM),
// in bytes.
func rss(pid int) (cur, peak int64, err error) {
	st, err := procFS().Proc(pid)
	var status procfs.ProcStatus
	if err == nil {
		status, err = st.NewStatus()
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	return int64(status.VmRSS), int64(status.VmHWM), nil
}

// cpuTime returns the CPU time pid has used, user plus system, including
// that of its children that have exited and been reaped (so a postmaster
// accounts for its finished backends).
func cpuTime(pid int) (time.Duration, error) {
	p, err := procFS().Proc(pid)
	var st procfs.ProcStat
	if err == nil {
		st, err = p.Stat()
	}
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	return time.Duration(int64(st.UTime)+int64(st.STime)+int64(st.CUTime)+int64(st.CSTime)) * clockTick, nil
}

// postgresCPU returns the CPU time of pg's processes, skipping those that
// have gone.
func postgresCPU(pg *privatepg.Server) time.Duration {
	var total time.Duration
	for _, pid := range pg.Pids() {
		d, _ := cpuTime(pid)
		total += d
	}
	return total
}

// machineTicks is the machine-wide CPU time split of /proc/stat's
// aggregate "cpu" line, in seconds. Guest time is already counted in user.
type machineTicks struct{ total, idle, iowait float64 }

func readMachineTicks() (machineTicks, error) {
	st, err := procFS().Stat()
	if err != nil {
		return machineTicks{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	c := st.CPUTotal
	return machineTicks{total: c.User + c.Nice + c.System + c.Idle + c.Iowait + c.IRQ + c.SoftIRQ + c.Steal, idle: c.Idle, iowait: c.Iowait}, nil
}

// procFS returns /proc; reading it fails later if it is not there.
func procFS() procfs.FS {
	fs, _ := procfs.NewDefaultFS()
	return fs
}

// busy returns the share of CPU time, in percent of all cores, that was
// busy and that was waiting for I/O between two readings.
func busy(before, after machineTicks) (busyPct, iowaitPct float64) {
	dt := after.total - before.total
	if dt <= 0 {
		return 0, 0
	}
	idle, iowait := after.idle-before.idle, after.iowait-before.iowait
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
	pct, _ := busy(before, after)
	return pct / 100 * float64(cpus), err
}

// machineFacts returns the first CPU model name of /proc/cpuinfo (or
// "unknown") and MemTotal of /proc/meminfo in bytes (or 0).
func machineFacts() (model string, mem int64) {
	model = "unknown"
	if infos, err := procFS().CPUInfo(); err == nil && len(infos) > 0 && infos[0].ModelName != "" {
		model = infos[0].ModelName
	}
	if m, err := procFS().Meminfo(); err == nil && m.MemTotalBytes != nil {
		mem = int64(*m.MemTotalBytes)
	}
	return model, mem
}
