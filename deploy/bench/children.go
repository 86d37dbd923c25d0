package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// childStopTimeout is how long a child may take to exit after SIGTERM
// before its process group is killed. The programs' own shutdown timeouts
// are 30 s, but after a run they have nothing left to flush.
const childStopTimeout = 20 * time.Second

// tailLines is how many of a child's last output lines are kept for the
// error when it exits unexpectedly.
const tailLines = 20

// child is a gateway or worker process. Its output goes, line by line and
// prefixed with its name, to the bench's standard error. Methods are safe
// for concurrent use.
type child struct {
	name string
	pid  int
	done chan struct{} // closed once reaped
	err  error         // from Wait; valid after done

	stopOnce sync.Once
	stopErr  error

	mu   sync.Mutex
	tail []string
}

// startChild starts path with env added to a cleaned copy of the bench's
// environment (see [childEnviron]).
//
// The child gets its own process group, so that stopping it stops whatever
// it started, and the kernel kills it if the bench dies (Pdeathsig). The
// death signal fires when the thread that forked the child exits, so the
// child is started and waited for on one goroutine locked to its thread.
func startChild(name, path string, env []string, out io.Writer) (*child, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: make output pipe: %w", name, err)
	}
	cmd := exec.Command(path)
	cmd.Env = append(childEnviron(os.Environ()), env...)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	c := &child{name: name, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		pw.Close() // the child has its own copy now
		if err != nil {
			pr.Close()
			started <- err
			return
		}
		c.pid = cmd.Process.Pid
		started <- nil

		copied := make(chan struct{})
		go func() {
			defer close(copied)
			c.copyOutput(pr, out)
		}()
		c.err = cmd.Wait()
		_ = syscall.Kill(-c.pid, syscall.SIGKILL) // anything left in its group
		select {
		case <-copied:
		case <-time.After(time.Second):
			pr.Close() // something outside the group holds the pipe
			<-copied
		}
		pr.Close()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	return c, nil
}

// childEnviron drops from env the variables that configure jetline, so
// that the programs run with their defaults plus what the bench sets, not
// with whatever the caller's shell holds.
func childEnviron(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "GATEWAY_"), strings.HasPrefix(name, "WORKER_"),
			strings.HasPrefix(name, "INGEST_"), strings.HasPrefix(name, "NATS_"),
			strings.HasPrefix(name, "LOG_"), name == "DATABASE_URL":
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (c *child) copyOutput(r io.Reader, out io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		c.mu.Lock()
		c.tail = append(c.tail, line)
		if len(c.tail) > tailLines {
			c.tail = c.tail[len(c.tail)-tailLines:]
		}
		c.mu.Unlock()
		fmt.Fprintf(out, "%-9s| %s\n", c.name, line)
	}
	// A line longer than the buffer ends the copy; keep draining so the
	// child never blocks on a full pipe.
	_, _ = io.Copy(io.Discard, r)
}

// Done is closed when the child has exited.
func (c *child) Done() <-chan struct{} { return c.done }

// exitError describes an exit nobody asked for, with the child's last
// output lines.
func (c *child) exitError() error {
	c.mu.Lock()
	tail := strings.Join(c.tail, "\n  ")
	c.mu.Unlock()
	status := "status 0"
	if c.err != nil {
		status = c.err.Error()
	}
	if tail == "" {
		return fmt.Errorf("%s (pid %d) exited unexpectedly: %s", c.name, c.pid, status)
	}
	return fmt.Errorf("%s (pid %d) exited unexpectedly: %s; last output:\n  %s", c.name, c.pid, status, tail)
}

// stop sends SIGTERM to the child's process group and waits until it exits
// or timeout passes, then kills the group and says so in the error. An
// exit with a non-zero status after SIGTERM is an error too. On a child
// that had already exited it returns nil: whoever watches [child.Done]
// reports that exit. Safe to call twice.
func (c *child) stop(timeout time.Duration) error {
	c.stopOnce.Do(func() { c.stopErr = c.terminate(timeout) })
	return c.stopErr
}

func (c *child) terminate(timeout time.Duration) error {
	select {
	case <-c.done:
		return nil
	default:
	}
	if err := syscall.Kill(-c.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s (pid %d): %w", c.name, c.pid, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-c.done:
		if c.err != nil {
			return fmt.Errorf("%s (pid %d) exited with %v after SIGTERM", c.name, c.pid, c.err)
		}
		return nil
	case <-t.C:
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("%s (pid %d) still running %s after SIGTERM; killed it", c.name, c.pid, timeout)
	}
}

// stopChildren stops cs in parallel and waits for all of them.
func stopChildren(cs []*child, timeout time.Duration) error {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() { errs[i] = c.stop(timeout) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
