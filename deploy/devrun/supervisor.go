package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetline/jetline/shared/childproc"
)

// Program is a child process for the [supervisor] to run.
type Program struct {
	// Name prefixes every line the child prints and names it in the log.
	Name string
	// Path is the executable; Args are its arguments.
	Path string
	Args []string
	// Env is added to the runner's own environment; where a variable
	// appears twice, the later value wins.
	Env []string
	// StopTimeout is how long the child may take to exit after SIGTERM
	// before its process group is killed.
	StopTimeout time.Duration
}

// supervisor runs child processes in groups and stops them group by group,
// the last group started first, the members of a group in parallel. Each
// child gets its own process group, so a Ctrl-C in the terminal reaches only
// the runner, which then decides the order; and the kernel kills each child
// if the runner dies, so nothing outlives it.
//
// A child that exits while nobody asked it to stop makes the supervisor
// fail: [supervisor.Failed] is closed and [supervisor.Err] says which child
// exited and how. Methods are safe for concurrent use.
type supervisor struct {
	logger *slog.Logger
	out    io.Writer // shared by all children; must serialise whole writes
	width  int       // names are padded to this width in the output prefix

	mu     sync.Mutex
	groups [][]*child

	failOnce sync.Once
	failed   chan struct{}
	failErr  error
}

// newSupervisor returns a supervisor writing the children's output to out,
// which must be safe for concurrent use, with names padded to width.
func newSupervisor(out io.Writer, width int, logger *slog.Logger) *supervisor {
	return &supervisor{
		logger: logger.With(slog.String("component", "supervisor")),
		out:    out,
		width:  width,
		failed: make(chan struct{}),
	}
}

// Failed is closed when the first child exits unexpectedly.
func (s *supervisor) Failed() <-chan struct{} { return s.failed }

// Err says which child exited unexpectedly, once [supervisor.Failed] is
// closed; nil before.
func (s *supervisor) Err() error {
	select {
	case <-s.failed:
		return s.failErr
	default:
		return nil
	}
}

// Start starts progs as one group. If a program cannot be started it returns
// the error at once; the group's children started so far keep running until
// [supervisor.Stop].
func (s *supervisor) Start(progs ...Program) error {
	s.mu.Lock()
	s.groups = append(s.groups, nil)
	g := len(s.groups) - 1
	s.mu.Unlock()
	for _, p := range progs {
		c, err := s.spawn(p)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.groups[g] = append(s.groups[g], c)
		s.mu.Unlock()
		s.logger.Info("started", slog.String("child", p.Name), slog.Int("pid", c.proc.Pid()), slog.String("path", p.Path))
	}
	return nil
}

// Stop stops every child, the group started last first, and waits for them.
// A child still running after its StopTimeout, or when ctx is done, is
// killed with its whole process group; the error lists those. Safe to call
// twice.
func (s *supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	groups := slices.Clone(s.groups)
	s.mu.Unlock()
	var errs []error
	for _, g := range slices.Backward(groups) {
		var (
			wg sync.WaitGroup
			mu sync.Mutex
		)
		for _, c := range g {
			wg.Go(func() {
				if err := c.stop(ctx, s.logger); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}

// fail records that c exited unexpectedly; only the first such exit counts.
func (s *supervisor) fail(c *child) {
	s.failOnce.Do(func() {
		status := exitStatus(c.proc.Err())
		s.failErr = fmt.Errorf("%s (pid %d) exited unexpectedly: %s", c.prog.Name, c.proc.Pid(), status)
		s.logger.Error("child exited unexpectedly", slog.String("child", c.prog.Name), slog.Int("pid", c.proc.Pid()), slog.String("exit", status))
		close(s.failed)
	})
}

// child is a running [Program].
type child struct {
	prog Program
	proc *childproc.Process

	stopping atomic.Bool // set before we signal it: its exit is expected
	stopOnce sync.Once
	stopErr  error
}

// spawn starts p (see [childproc.Start]); its stdout and stderr go, line by
// line and prefixed with its name, to the supervisor's output. An exit
// nobody asked for makes the supervisor fail.
func (s *supervisor) spawn(p Program) (*child, error) {
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	out := newPrefixWriter(fmt.Sprintf("%-*s | ", s.width, p.Name), s.out)
	proc, err := childproc.Start(cmd, func(r io.Reader) {
		_, _ = io.Copy(out, r)
		_ = out.Flush()
	})
	if err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", p.Name, p.Path, err)
	}
	c := &child{prog: p, proc: proc}
	go func() {
		<-proc.Done()
		if !c.stopping.Load() {
			s.fail(c)
		}
	}()
	return c, nil
}

// stop sends SIGTERM to the child's process group and waits until it exits,
// its StopTimeout passes or ctx is done; in the latter two cases it kills the
// group with SIGKILL and says so in the error. Safe to call twice and on a
// child that has already exited.
func (c *child) stop(ctx context.Context, logger *slog.Logger) error {
	c.stopOnce.Do(func() { c.stopErr = c.terminate(ctx, logger) })
	return c.stopErr
}

func (c *child) terminate(ctx context.Context, logger *slog.Logger) error {
	c.stopping.Store(true)
	attrs := []any{slog.String("child", c.prog.Name), slog.Int("pid", c.proc.Pid())}
	select {
	case <-c.proc.Done():
		return nil // It exited before; the supervisor has reported it.
	default:
	}
	logger.Info("stopping", append(attrs, slog.Duration("timeout", c.prog.StopTimeout))...)
	start := time.Now()
	if err := c.proc.Terminate(ctx, c.prog.StopTimeout); err != nil {
		logger.Warn("killed", append(attrs, slog.String("reason", err.Error()))...)
		return fmt.Errorf("%s (pid %d): %w", c.prog.Name, c.proc.Pid(), err)
	}
	logger.Info("stopped", append(attrs, slog.String("exit", exitStatus(c.proc.Err())), slog.Duration("elapsed", time.Since(start)))...)
	return nil
}

// exitStatus describes how a child ended, from its Wait error.
func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
