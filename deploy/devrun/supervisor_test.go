package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/testenv"
)

// lockedBuffer is a buffer safe for concurrent use that a test can wait on.
type lockedBuffer struct{ testenv.Buffer }

// waitFor polls until the buffer holds n occurrences of s, failing the test
// after ten seconds.
func (b *lockedBuffer) waitFor(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(b.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d× %q in output:\n%s", n, s, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// supervisorBundle is what setupSupervisor returns.
type supervisorBundle struct {
	sup    *supervisor
	out    *lockedBuffer // the children's output
	log    *lockedBuffer // the supervisor's log, also sent to t.Log
	logDir string
}

// testPolicy restarts quickly, allowing 3 restarts in 10 s.
var testPolicy = restartPolicy{Intensity: 3, Period: 10 * time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, StableRun: 10 * time.Second}

func setupSupervisor(t *testing.T) supervisorBundle {
	t.Helper()
	out, log := &lockedBuffer{}, &lockedBuffer{}
	logDir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(log, testLogWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	sup := newSupervisor(out, 8, logDir, testPolicy, logger)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // Whatever is left is killed at once.
		_ = sup.Stop(ctx)
	})
	return supervisorBundle{sup: sup, out: out, log: log, logDir: logDir}
}

// testLogWriter sends log lines to t.Log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// shell returns a program running script with sh.
func shell(name, script string, stopTimeout time.Duration) Program {
	return Program{Name: name, Path: "/bin/sh", Args: []string{"-c", script}, StopTimeout: stopTimeout}
}

// politeScript announces itself and exits cleanly on SIGTERM.
const politeScript = `trap 'echo draining; exit 0' TERM; echo up; while :; do sleep 0.05; done`

func TestSupervisorStopsLastGroupFirst(t *testing.T) {
	t.Parallel()
	b := setupSupervisor(t)
	if err := b.sup.Start(shell("worker-1", politeScript, 5*time.Second), shell("worker-2", politeScript, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := b.sup.Start(shell("gateway", politeScript, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	b.out.waitFor(t, "| up", 3)

	if err := b.sup.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	out := b.out.String()
	gw := strings.Index(out, "gateway  | draining")
	w1 := strings.Index(out, "worker-1 | draining")
	w2 := strings.Index(out, "worker-2 | draining")
	if gw < 0 || w1 < 0 || w2 < 0 {
		t.Fatalf("not every child drained:\n%s", out)
	}
	if gw > w1 || gw > w2 {
		t.Errorf("workers were stopped before the gateway:\n%s", out)
	}
	if b.sup.Err() != nil {
		t.Errorf("Err after an orderly stop = %v, want nil", b.sup.Err())
	}
	select {
	case <-b.sup.Failed():
		t.Error("Failed closed by an orderly stop")
	default:
	}
	if err := b.sup.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestSupervisorKillsChildThatIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		stopTimeout time.Duration
		hurryAfter  time.Duration // cancel Stop's context after this; 0 never
		wantReason  string
	}{
		{name: "stop timeout", stopTimeout: 300 * time.Millisecond, wantReason: "did not exit within 300ms of SIGTERM"},
		{name: "hurried", stopTimeout: time.Hour, hurryAfter: 300 * time.Millisecond, wantReason: "the stop was cut short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupSupervisor(t)
			if err := b.sup.Start(shell("stubborn", `trap '' TERM; echo up; sleep 60`, tt.stopTimeout)); err != nil {
				t.Fatal(err)
			}
			b.out.waitFor(t, "| up", 1)
			ctx := context.Background()
			if tt.hurryAfter > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.hurryAfter)
				defer cancel()
			}
			start := time.Now()
			err := b.sup.Stop(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.wantReason) || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("Stop = %v, want an error saying %q and killed", err, tt.wantReason)
			}
			if elapsed := time.Since(start); elapsed > 10*time.Second {
				t.Errorf("Stop took %s", elapsed)
			}
		})
	}
}

func TestSupervisorLeavesNoProcessBehind(t *testing.T) {
	t.Parallel()
	b := setupSupervisor(t)
	// The grandchild ignores SIGTERM and would outlive its parent, which
	// exits cleanly on SIGTERM.
	script := `(trap '' TERM; exec sleep 60) & echo "grandchild=$!"; trap 'exit 0' TERM; echo up; wait`
	if err := b.sup.Start(shell("parent", script, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	b.out.waitFor(t, "| up", 1)
	m := regexp.MustCompile(`grandchild=(\d+)`).FindStringSubmatch(b.out.String())
	if m == nil {
		t.Fatalf("no grandchild pid in output:\n%s", b.out.String())
	}
	pid, _ := strconv.Atoi(m[1])
	if !processAlive(pid) {
		t.Fatalf("grandchild %d not running before Stop", pid)
	}

	if err := b.sup.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("grandchild %d still alive after Stop", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSupervisorRestartsKilledChild(t *testing.T) {
	t.Parallel()
	b := setupSupervisor(t)
	p := shell("victim", `echo "up pid=$$ A=$DEVRUN_TEST_A"; `+politeScript, 5*time.Second)
	p.Env = []string{"DEVRUN_TEST_A=kept"}
	if err := b.sup.Start(p); err != nil {
		t.Fatal(err)
	}
	b.out.waitFor(t, "victim   | up pid=", 1)
	pid := lastPid(t, b.out.String())
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.out.waitFor(t, "victim   | up pid=", 2)
	if again := lastPid(t, b.out.String()); again == pid {
		t.Fatalf("pid %d after the restart, as before", again)
	}
	if got := strings.Count(b.out.String(), "A=kept\n"); got != 2 {
		t.Errorf("want the restarted child to keep its environment:\n%s", b.out.String())
	}
	b.log.waitFor(t, "msg=restarted component=supervisor child=victim", 1)
	if !strings.Contains(b.log.String(), `msg=restarting component=supervisor child=victim exit="signal: killed"`) {
		t.Errorf("restart not logged with the exit status:\n%s", b.log.String())
	}
	if b.sup.Err() != nil {
		t.Fatalf("Err after one restart = %v", b.sup.Err())
	}
	if err := b.sup.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !strings.Contains(b.out.String(), "victim   | draining") {
		t.Errorf("the restarted child was not stopped gracefully:\n%s", b.out.String())
	}
	// Both runs are in the child's log file, each after a start marker.
	logFile, err := os.ReadFile(filepath.Join(b.logDir, "victim.log"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logFile), "---- devrun: victim starting at"); n != 2 || strings.Count(string(logFile), "up pid=") != 2 {
		t.Errorf("log file has %d start markers, want 2 and both runs' output:\n%s", n, logFile)
	}
}

func TestSupervisorGivesUpOnChildThatKeepsFailing(t *testing.T) {
	t.Parallel()
	b := setupSupervisor(t)
	if err := b.sup.Start(shell("steady", politeScript, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.sup.Start(shell("fragile", `echo "giving up"; exit 3`, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.sup.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed not closed while a child kept exiting")
	}
	t.Logf("gave up after %s", time.Since(start))
	err := b.sup.Err()
	for _, want := range []string{"fragile keeps failing", "exit status 3", "4 restarts within 10s", "exceed the 3 allowed", filepath.Join(b.logDir, "fragile.log")} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Err = %v, want it to say %q", err, want)
		}
	}
	// The first run and three restarts: the fourth restart is refused.
	if n := strings.Count(b.out.String(), "fragile  | giving up"); n != 4 {
		t.Errorf("fragile ran %d times, want 4:\n%s", n, b.out.String())
	}
	// The healthy child is still there to be stopped in order.
	if err := b.sup.Stop(context.Background()); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !strings.Contains(b.out.String(), "steady   | draining") {
		t.Errorf("steady child was not stopped gracefully:\n%s", b.out.String())
	}
}

func TestSupervisorStopsChildWaitingForRestart(t *testing.T) {
	t.Parallel()
	out := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(testLogWriter{t}, nil))
	policy := testPolicy
	policy.MinBackoff = time.Hour
	sup := newSupervisor(out, 8, "", policy, logger)
	if err := sup.Start(shell("crasher", `echo up; exit 1`, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "crasher  | up", 1)
	time.Sleep(50 * time.Millisecond) // into the hour's backoff
	start := time.Now()
	if err := sup.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Stop waited %s for a child in backoff", elapsed)
	}
	if n := strings.Count(out.String(), "crasher  | up"); n != 1 {
		t.Errorf("crasher ran %d times, want 1", n)
	}
}

// lastPid returns the pid of the last "up pid=N" line in out.
func lastPid(t *testing.T, out string) int {
	t.Helper()
	m := regexp.MustCompile(`up pid=(\d+)`).FindAllStringSubmatch(out, -1)
	if m == nil {
		t.Fatalf("no pid in output:\n%s", out)
	}
	pid, _ := strconv.Atoi(m[len(m)-1][1])
	return pid
}

func TestSupervisorStartError(t *testing.T) {
	t.Parallel()
	b := setupSupervisor(t)
	err := b.sup.Start(Program{Name: "ghost", Path: "/nonexistent/ghost", StopTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("Start = %v, want an error naming ghost", err)
	}
}

func TestSupervisorPassesEnvironment(t *testing.T) {
	t.Parallel()
	b := setupSupervisor(t)
	p := shell("env", `echo "A=$DEVRUN_TEST_A"; trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done`, 5*time.Second)
	p.Env = []string{"DEVRUN_TEST_A=first", "DEVRUN_TEST_A=second"}
	if err := b.sup.Start(p); err != nil {
		t.Fatal(err)
	}
	b.out.waitFor(t, "| up", 1)
	if !strings.Contains(b.out.String(), "env      | A=second\n") {
		t.Errorf("later Env entry should win:\n%s", b.out.String())
	}
}

// processAlive reports whether pid is a live (not zombie) process.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	state := stat[i+2]
	return state != 'Z' && state != 'X'
}
