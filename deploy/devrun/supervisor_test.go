package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/testenv"
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
	sup *supervisor
	out *lockedBuffer
}

func setupSupervisor(t *testing.T) supervisorBundle {
	t.Helper()
	out := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sup := newSupervisor(out, 8, logger)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // Whatever is left is killed at once.
		_ = sup.Stop(ctx)
	})
	return supervisorBundle{sup: sup, out: out}
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
		{name: "stop timeout", stopTimeout: 300 * time.Millisecond, wantReason: "still running 300ms after SIGTERM"},
		{name: "hurried", stopTimeout: time.Hour, hurryAfter: 300 * time.Millisecond, wantReason: "stop cut short"},
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

func TestSupervisorReportsUnexpectedExit(t *testing.T) {
	t.Parallel()
	b := setupSupervisor(t)
	if err := b.sup.Start(shell("steady", politeScript, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := b.sup.Start(shell("fragile", `echo "giving up"; exit 3`, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.sup.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed not closed after a child exited")
	}
	err := b.sup.Err()
	if err == nil || !strings.Contains(err.Error(), "fragile") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Err = %v, want it to name fragile and exit status 3", err)
	}
	b.out.waitFor(t, "fragile  | giving up", 1)
	// The healthy child is still there to be stopped in order.
	if err := b.sup.Stop(context.Background()); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !strings.Contains(b.out.String(), "steady   | draining") {
		t.Errorf("steady child was not stopped gracefully:\n%s", b.out.String())
	}
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
