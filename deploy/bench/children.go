package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/jetline/jetline/shared/devkit/childproc"
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
	proc *childproc.Process
	// out is the bench's standard error; each line the child prints goes
	// to it after prefix.
	out    io.Writer
	prefix string

	mu   sync.Mutex
	tail []string
}

// startChild starts path with env added to a cleaned copy of the bench's
// environment (see [childEnviron]), in its own process group and killed if
// the bench dies (see [childproc.Start]), and adds it to the harness's
// children, which [bench.stopPrograms] and [harness.close] stop.
func (b *bench) startChild(name, path string, env []string) (*child, error) {
	cmd := exec.Command(path)
	cmd.Env = append(childEnviron(os.Environ()), env...)
	c := &child{name: name, prefix: fmt.Sprintf("%-9s| ", name), out: b.stderr}
	w := childproc.NewPrefixWriter(c.prefix, c)
	proc, err := childproc.Start(cmd, func(r io.Reader) {
		_, _ = io.Copy(w, r)
		_ = w.Flush()
	})
	if err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	c.proc, c.pid = proc, proc.Pid()
	b.h.children = append(b.h.children, c)
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

// Write is given one prefixed output line at a time by the child's
// [childproc.PrefixWriter]; it keeps the line, unprefixed, in the tail and
// writes it to the bench's output. A failed write is dropped rather than
// returned: stopping to read would block the child.
func (c *child) Write(line []byte) (int, error) {
	c.mu.Lock()
	c.tail = append(c.tail, strings.TrimSuffix(strings.TrimPrefix(string(line), c.prefix), "\n"))
	if len(c.tail) > tailLines {
		c.tail = c.tail[len(c.tail)-tailLines:]
	}
	c.mu.Unlock()
	_, _ = c.out.Write(line)
	return len(line), nil
}

// exitError describes an exit nobody asked for, with the child's last
// output lines.
func (c *child) exitError() error {
	c.mu.Lock()
	tail := strings.Join(c.tail, "\n  ")
	c.mu.Unlock()
	status := "status 0"
	if err := c.proc.Err(); err != nil {
		status = err.Error()
	}
	if tail == "" {
		return fmt.Errorf("%s (pid %d) exited unexpectedly: %s", c.name, c.pid, status)
	}
	return fmt.Errorf("%s (pid %d) exited unexpectedly: %s; last output:\n  %s", c.name, c.pid, status, tail)
}

// exited returns the error of the first of cs that has exited, or nil.
func exited(cs []*child) error {
	for _, c := range cs {
		if c.proc.Exited() {
			return c.exitError()
		}
	}
	return nil
}

// stop stops the child with SIGTERM, killing it after timeout (see
// [childproc.Process.Terminate]). An exit with a non-zero status after
// SIGTERM is an error too. On a child that has exited it returns nil:
// [exited] reports an exit nobody asked for.
func (c *child) stop(timeout time.Duration) error {
	if c.proc.Exited() {
		return nil
	}
	err := c.proc.Terminate(context.Background(), timeout)
	if err == nil && c.proc.Err() != nil {
		err = fmt.Errorf("%s (pid %d) exited with %v after SIGTERM", c.name, c.pid, c.proc.Err())
	}
	return err
}

// stopPrograms fails if one of the harness's children has exited on its
// own, and otherwise stops them all; what names them in the progress.
func (b *bench) stopPrograms(what string) error {
	cs := b.h.children
	if err := exited(cs); err != nil {
		return err
	}
	b.pr.step("stopping %s (SIGTERM)", what)
	b.h.children = nil
	if err := stopChildren(cs, childStopTimeout); err != nil {
		return fmt.Errorf("stop %s: %w", what, err)
	}
	return nil
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
