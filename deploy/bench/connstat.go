package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// currentRSS returns the resident set size (VmRSS) of pid in bytes.
func currentRSS(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// openFilesLimit returns the soft limit on open files of pid.
func openFilesLimit(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return 0, fmt.Errorf("read limits of pid %d: %w", pid, err)
	}
	return parseOpenFilesLimit(b)
}

// parseOpenFilesLimit returns the soft limit of the "Max open files" line
// of /proc/<pid>/limits.
func parseOpenFilesLimit(limits []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(limits))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Max open files")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			break
		}
		if fields[0] == "unlimited" {
			return 1 << 62, nil
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected limits line %q: %w", sc.Text(), err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("no Max open files line in /proc limits")
}

// loadAvg returns the first three fields of /proc/loadavg, or "unknown".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// goroutines returns the gateway's go_goroutines from its /metrics, or -1
// when it serves no such metric.
func (r *connRun) goroutines(ctx context.Context) int {
	v, ok := scrapeSum(ctx, r.healthAddr, "go_goroutines")
	if !ok {
		return -1
	}
	return int(v)
}
