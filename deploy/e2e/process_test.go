package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/childproc"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// stopTimeout bounds how long a program may take to exit after SIGTERM; it
// exceeds the shutdown timeouts the tests configure.
const stopTimeout = 30 * time.Second

// proc is a running program under test: a gateway or a worker.
type proc struct {
	name   string
	proc   *childproc.Process
	stderr testenv.Buffer // its stdout and stderr
	// readyURL is a worker's /readyz; empty for a gateway.
	readyURL string
	// dismissed is set when the test ends the process on purpose (or
	// expects it to end), so its exit status is not held against it.
	dismissed atomic.Bool
}

// startProc starts path with exactly the environment env (plus PATH), in
// its own process group and killed if the test binary dies (see
// [childproc.Start]). The caller must see that it is stopped and checked
// (see [bundle.stopAll] and [proc.check]).
func startProc(t *testing.T, name, path string, env map[string]string) *proc {
	t.Helper()
	p := &proc{name: name}
	cmd := exec.Command(path)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	slices.Sort(cmd.Env)
	var err error
	if p.proc, err = childproc.Start(cmd, func(r io.Reader) { _, _ = io.Copy(&p.stderr, r) }); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return p
}

// pid returns the process id.
func (p *proc) pid() int { return p.proc.Pid() }

// exited reports whether the process has ended.
func (p *proc) exited() bool { return p.proc.Exited() }

// kill SIGKILLs the process, as a crash would, and waits until it is gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.dismissed.Store(true)
	p.proc.Kill()
}

// check fails t if the stopped process exited other than cleanly (unless
// the test dismissed it), reported a data race or logged at level ERROR.
func (p *proc) check(t *testing.T) {
	t.Helper()
	if !p.dismissed.Load() && p.proc.Err() != nil {
		t.Errorf("%s exited with %v", p.name, p.proc.Err())
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
	if p.proc.Err() == nil {
		return fmt.Errorf("%s exited with status 0", p.name)
	}
	return fmt.Errorf("%s exited: %w", p.name, p.proc.Err())
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
