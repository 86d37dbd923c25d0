package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses.
	stat := []byte("4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 7 3 20 0 1 0 100 1000 10")
	got, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 210 * clockTick; got != want {
		t.Fatalf("parseStatCPU = %s, want %s", got, want)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("parseStatCPU accepted garbage")
	}
}

func TestCPUTimeOfSelf(t *testing.T) {
	t.Parallel()
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
}

func TestParseStatusKB(t *testing.T) {
	t.Parallel()
	status := []byte("Name:\tgateway\nVmPeak:\t  900 kB\nVmHWM:\t   2048 kB\nThreads:\t9\n")
	got, err := parseStatusKB(status, "VmHWM")
	if err != nil || got != 2048<<10 {
		t.Fatalf("parseStatusKB = %d, %v; want %d", got, err, 2048<<10)
	}
	if _, err := parseStatusKB(status, "VmRSS"); err == nil {
		t.Fatal("parseStatusKB found a missing line")
	}
}

func TestMachineTicksAndBusy(t *testing.T) {
	t.Parallel()
	before, err := parseMachineTicks([]byte("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseMachineTicks([]byte("cpu  200 0 200 1200 200 0 0 0 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, io := busy(before, after)
	if b != 25 || io != 12.5 {
		t.Fatalf("busy = %.1f%%, iowait %.1f%%; want 25%% and 12.5%%", b, io)
	}
	if _, err := parseMachineTicks([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("parseMachineTicks accepted a file without the cpu line")
	}
}
