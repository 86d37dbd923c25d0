package main

import (
	"os"
	"testing"
	"time"
)

// TestProcOfSelf reads this process's CPU time, memory and limits and the
// machine's CPU split through procfs.
func TestProcOfSelf(t *testing.T) {
	t.Parallel()
	before, err := readMachineTicks()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	d, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d <= 0 {
		t.Fatalf("cpuTime(self) = %s after spinning", d)
	}
	if rss, err := peakRSS(os.Getpid()); err != nil || rss < 1<<20 {
		t.Fatalf("peakRSS(self) = %d, %v", rss, err)
	}
	if rss, err := currentRSS(os.Getpid()); err != nil || rss < 1<<20 {
		t.Fatalf("currentRSS(self) = %d, %v", rss, err)
	}
	if n, err := openFilesLimit(os.Getpid()); err != nil || n < 16 {
		t.Fatalf("openFilesLimit(self) = %d, %v", n, err)
	}
	after, err := readMachineTicks()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := busy(before, after); b <= 0 || b > 100 {
		t.Fatalf("busy = %.1f%% while spinning", b)
	}
	if memTotal() < 1<<20 || cpuModel() == "" || loadAvg() == "unknown" {
		t.Fatalf("memTotal %d, cpuModel %q, loadAvg %q", memTotal(), cpuModel(), loadAvg())
	}
}

func TestBusy(t *testing.T) {
	t.Parallel()
	before := machineTicks{total: 10, idle: 7, iowait: 1}
	after := machineTicks{total: 18, idle: 12, iowait: 2}
	b, io := busy(before, after)
	if b != 25 || io != 12.5 {
		t.Fatalf("busy = %.1f%%, iowait %.1f%%; want 25%% and 12.5%%", b, io)
	}
}
