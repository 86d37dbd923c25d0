// Package secrettest runs a program's main function in a child process,
// with an environment of the test's choosing, and checks that nothing the
// program writes (logs, errors) holds a secret. The child is the test
// binary itself, so no build step is needed:
//
//	func TestRunMain(t *testing.T) { secrettest.Main(t, main) }
//
//	func TestSecrets(t *testing.T) {
//		p := secrettest.Start(t, "TestRunMain", map[string]string{"NATS_URL": "nats://u:pw@host:4222"})
//		p.WaitFor(t, "nats connected")
//		p.Stop(t)
//		secrettest.NoSecrets(t, p.Output(), "pw")
//	}
package secrettest

import (
	"bytes"
	"context"
	"io"
	"maps"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/childproc"
)

// childEnv marks a child started by [Start]; its value names the test
// that runs main.
const childEnv = "JETLINE_SECRETTEST_MAIN"

// stopTimeout bounds how long a program may take to exit after SIGTERM or,
// for [Program.Wait], on its own.
const stopTimeout = 30 * time.Second

// Main runs main as the program when this test binary is a child started by
// [Start] for the test calling it, and skips the test otherwise. main sees
// no command-line arguments.
func Main(t *testing.T, main func()) {
	if os.Getenv(childEnv) != t.Name() {
		t.Skip("runs the program's main in a child process started by secrettest.Start")
	}
	os.Args = os.Args[:1]
	main()
}

// Program is a program running in a child process. Its methods are safe for
// concurrent use.
type Program struct {
	proc *childproc.Process
	mu   sync.Mutex
	out  bytes.Buffer // stdout and stderr
}

// Start runs the test named mainTest (which calls [Main]) in a child process
// with exactly the variables of envs plus PATH, HOME and TMPDIR, collecting
// its output. A variable in more than one of envs takes its value from the
// last. The child is killed when the test ends if it is still running.
func Start(t *testing.T, mainTest string, envs ...map[string]string) *Program {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+mainTest+"$", "-test.count=1")
	cmd.Env = []string{childEnv + "=" + mainTest}
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	merged := map[string]string{}
	for _, env := range envs {
		maps.Copy(merged, env)
	}
	for k, v := range merged {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &Program{}
	var err error
	if p.proc, err = childproc.Start(cmd, func(r io.Reader) { _, _ = io.Copy(p, r) }); err != nil {
		t.Fatalf("start %s: %v", mainTest, err)
	}
	t.Cleanup(p.proc.Kill)
	return p
}

// Write collects the child's output.
func (p *Program) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output returns what the program has written so far.
func (p *Program) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// WaitFor waits until the program's output holds want, failing the test if
// the program exits first or 30 s pass.
func (p *Program) WaitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(stopTimeout)
	for !strings.Contains(p.Output(), want) {
		select {
		case <-p.proc.Done():
			if strings.Contains(p.Output(), want) {
				return
			}
			t.Fatalf("program exited (%v) before writing %q; its output:\n%s", p.proc.Err(), want, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("program did not write %q in %s; its output:\n%s", want, stopTimeout, p.Output())
		}
	}
}

// Stop sends SIGTERM and waits for the program to exit, failing the test if
// it had to be killed; it returns how the program ended (nil for status 0).
func (p *Program) Stop(t *testing.T) error {
	t.Helper()
	if err := p.proc.Terminate(context.Background(), stopTimeout); err != nil {
		t.Fatalf("%v; output:\n%s", err, p.Output())
	}
	return p.proc.Err()
}

// Wait waits for the program to exit on its own and returns how it ended
// (nil for status 0), failing the test if it runs for 30 s.
func (p *Program) Wait(t *testing.T) error {
	t.Helper()
	select {
	case <-p.proc.Done():
		return p.proc.Err()
	case <-time.After(stopTimeout):
		t.Fatalf("program still running after %s; output:\n%s", stopTimeout, p.Output())
		return nil
	}
}

// WantFailure waits for the program to exit on its own, and fails the test
// if it exits with status 0 or its output does not hold want.
func (p *Program) WantFailure(t *testing.T, want string) {
	t.Helper()
	if err := p.Wait(t); err == nil {
		t.Fatalf("program exited with status 0, want a failure; output:\n%s", p.Output())
	}
	if !strings.Contains(p.Output(), want) {
		t.Fatalf("output does not say %q:\n%s", want, p.Output())
	}
}

// StopAfter waits until the program's output holds want, then stops it
// with [Program.Stop], failing the test unless it exits with status 0.
func (p *Program) StopAfter(t *testing.T, want string) {
	t.Helper()
	p.WaitFor(t, want)
	if err := p.Stop(t); err != nil {
		t.Fatalf("program exited with %v; output:\n%s", err, p.Output())
	}
}

// Run is one way of running a program for [Runs]. Start runs the program
// with its logs in format ("json" or "text") and returns it once it has
// exited.
type Run struct {
	Name  string
	Start func(t *testing.T, format string) *Program
}

// Runs runs each of runs once with JSON logs and once with text logs, as
// parallel subtests, and fails a subtest if the program's output has no
// configuration line or holds any of secrets.
func Runs(t *testing.T, runs []Run, secrets ...string) {
	t.Helper()
	for _, format := range []string{"json", "text"} {
		for _, r := range runs {
			t.Run(format+"/"+r.Name, func(t *testing.T) {
				t.Parallel()
				out := r.Start(t, format).Output()
				if !strings.Contains(out, "configuration") {
					t.Errorf("no configuration line:\n%s", out)
				}
				NoSecrets(t, out, secrets...)
				if t.Failed() {
					t.Logf("output:\n%s", out)
				}
			})
		}
	}
}

// NoSecrets fails the test if output holds any of secrets, showing the
// lines that do.
func NoSecrets(t *testing.T, output string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			t.Fatal("NoSecrets: an empty secret matches everything")
		}
		for _, line := range strings.Split(output, "\n") {
			if strings.Contains(line, s) {
				t.Errorf("output holds secret %q: %s", s, line)
			}
		}
	}
}
