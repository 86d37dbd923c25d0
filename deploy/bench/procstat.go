package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of CPU times in /proc: USER_HZ, 100 on every Linux
// architecture Go supports.
const clockTick = 10 * time.Millisecond

// peakRSS returns the peak resident set size (VmHWM) of pid in bytes.
func peakRSS(pid int) (int64, error) { return statusBytes(pid, "VmHWM") }

// statusBytes returns the "name:   123 kB" line of /proc/<pid>/status in
// bytes.
func statusBytes(pid int, name string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read %s of pid %d: %w", name, pid, err)
	}
	return parseStatusKB(b, name)
}

// parseStatusKB returns the value of a "Name:   123 kB" line of
// /proc/<pid>/status in bytes.
func parseStatusKB(status []byte, name string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != name {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", name, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected %s line %q: %w", name, sc.Text(), err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line in /proc status", name)
}

// cpuTime returns the CPU time pid has used, user plus system, including
// that of its children that have exited and been reaped (so a postmaster
// accounts for its finished backends).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU sums utime, stime, cutime and cstime of a /proc/<pid>/stat
// line.
func parseStatCPU(stat []byte) (time.Duration, error) {
	// The command name is parenthesised and may hold spaces; the fields
	// after it start with the state (field 3), so utime (field 14) is the
	// 12th after the name.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc stat line %q", stat)
	}
	fields := strings.Fields(string(stat[i+1:]))
	if len(fields) < 15 {
		return 0, fmt.Errorf("unexpected /proc stat line %q", stat)
	}
	var ticks int64
	for _, f := range fields[11:15] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected /proc stat field %q: %w", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// dirProcs returns the processes whose working directory is dir. Every
// postgres process works in its data directory, and its backends are in
// sessions of their own, so this is how all of a server's processes are
// found.
func dirProcs(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && cwd == dir {
			pids = append(pids, pid)
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

// machineTicks is the machine-wide CPU time split of /proc/stat.
type machineTicks struct {
	total, idle, iowait int64
}

// readMachineTicks reads the aggregate "cpu" line of /proc/stat.
func readMachineTicks() (machineTicks, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineTicks{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseMachineTicks(b)
}

func parseMachineTicks(stat []byte) (machineTicks, error) {
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 6 || fields[0] != "cpu" {
		return machineTicks{}, fmt.Errorf("unexpected /proc/stat first line %q", line)
	}
	var t machineTicks
	// user nice system idle iowait irq softirq steal [guest guest_nice];
	// guest time is already counted in user.
	for i, f := range fields[1:min(len(fields), 9)] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return machineTicks{}, fmt.Errorf("unexpected /proc/stat field %q: %w", f, err)
		}
		t.total += n
		switch i {
		case 3:
			t.idle = n
		case 4:
			t.iowait = n
		}
	}
	return t, nil
}

// cpuModel returns the first "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown"
}

// memTotal returns MemTotal of /proc/meminfo in bytes, or 0.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	n, _ := parseStatusKB(b, "MemTotal")
	return n
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
	return 100 * float64(dt-idle-iowait) / float64(dt), 100 * float64(iowait) / float64(dt)
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
