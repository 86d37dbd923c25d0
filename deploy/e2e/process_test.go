package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// stopTimeout bounds how long a program may take to exit after SIGTERM; it
// exceeds the shutdown timeouts the tests configure.
const stopTimeout = 30 * time.Second

// proc is a running program under test: a gateway or a worker.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr lockedBuffer

	done    chan struct{} // closed once the process has been reaped
	waitErr error         // Wait's result, once done is closed
	// dismissed is set when the test ends the process on purpose (or
	// expects it to end), so its exit status is not held against it.
	dismissed atomic.Bool
}

// startProc starts path with exactly the environment env (plus PATH). The
// caller must see that it is stopped and checked (see [proc.stop] and
// [proc.check]).
func startProc(t *testing.T, name, path string, env map[string]string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	slices.Sort(p.cmd.Env)
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = childAttr()

	// The death signal fires when the thread that forked the child exits,
	// so that thread stays locked until the child is reaped.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return p
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill SIGKILLs the process, as a crash would, and waits until it is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.dismissed.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still running 10s after SIGKILL", p.name)
	}
}

// stop asks the process to stop with SIGTERM and waits for it to exit,
// killing it after stopTimeout. It reports false if it had to kill it.
func (p *proc) stop() bool {
	if p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return false
	}
}

// check fails t if the stopped process exited other than cleanly (unless
// the test dismissed it), reported a data race or logged at level ERROR.
func (p *proc) check(t *testing.T) {
	t.Helper()
	if !p.dismissed.Load() && p.waitErr != nil {
		t.Errorf("%s exited with %v", p.name, p.waitErr)
	}
	logs := p.stderr.String()
	if strings.Contains(logs, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race (its log follows the test's)", p.name)
	}
	if errs := errorRecords(logs); len(errs) > 0 {
		t.Errorf("%s logged %d records at level ERROR, the first: %s", p.name, len(errs), errs[0])
	}
}

// exitErr describes how the process ended, for failure messages.
func (p *proc) exitErr() error {
	if !p.exited() {
		return nil
	}
	if p.waitErr == nil {
		return fmt.Errorf("%s exited with status 0", p.name)
	}
	return fmt.Errorf("%s exited: %w", p.name, p.waitErr)
}

// errorRecords returns the JSON log records of level ERROR in logs.
func errorRecords(logs string) []string {
	var out []string
	for line := range strings.Lines(logs) {
		var rec struct {
			Level string `json:"level"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == "ERROR" {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
	}
	return out
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail returns at most the last n bytes of s, starting at a line.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "[…]\n" + s
}

// lostPortRace reports whether p exited because a port chosen for it was
// taken by someone else before it could bind it.
func (p *proc) lostPortRace() bool {
	return p.exited() && strings.Contains(p.stderr.String(), "address already in use")
}
