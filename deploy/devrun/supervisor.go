package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
		s.logger.Info("started", slog.String("child", p.Name), slog.Int("pid", c.pid), slog.String("path", p.Path))
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
		status := exitStatus(c.err)
		s.failErr = fmt.Errorf("%s (pid %d) exited unexpectedly: %s", c.prog.Name, c.pid, status)
		s.logger.Error("child exited unexpectedly", slog.String("child", c.prog.Name), slog.Int("pid", c.pid), slog.String("exit", status))
		close(s.failed)
	})
}

// child is a running [Program].
type child struct {
	prog Program
	pid  int           // also its process group id
	done chan struct{} // closed once the child is reaped
	err  error         // from Wait; valid after done

	stopping atomic.Bool // set before we signal it: its exit is expected
	stopOnce sync.Once
	stopErr  error
}

// spawn starts p and reaps it in the background.
//
// The child is started and waited for on one goroutine locked to its OS
// thread: Pdeathsig fires when the *thread* that forked the child exits, and
// the Go runtime may retire an unlocked goroutine's thread while the child
// is still wanted. Keeping the thread until the child is reaped costs one
// parked thread per child; if the runner dies, even by SIGKILL, the thread
// dies with it and the kernel kills the child.
//
// The child's stdout and stderr go, line by line and prefixed with its
// name, to the supervisor's output.
func (s *supervisor) spawn(p Program) (*child, error) {
	// The child writes into a pipe of our own rather than one exec.Cmd
	// makes, so that Wait returns when the child exits even if something it
	// started still holds the pipe; that straggler is then killed below.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: make output pipe: %w", p.Name, err)
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout = pw
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	c := &child{prog: p, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		pw.Close() // The child has its own copy now.
		if err != nil {
			pr.Close()
			started <- err
			return
		}
		c.pid = cmd.Process.Pid
		started <- nil

		out := newPrefixWriter(fmt.Sprintf("%-*s | ", s.width, p.Name), s.out)
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			_, _ = io.Copy(out, pr)
		}()
		c.err = cmd.Wait()
		// Whatever the child left behind in its group goes with it. The
		// group id cannot be reused while any member is alive.
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
		select {
		case <-copied:
		case <-time.After(time.Second):
			// Something outside the group holds the pipe; stop reading.
			pr.Close()
			<-copied
		}
		pr.Close()
		_ = out.Flush()
		close(c.done)
		if !c.stopping.Load() {
			s.fail(c)
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", p.Name, p.Path, err)
	}
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
	attrs := []any{slog.String("child", c.prog.Name), slog.Int("pid", c.pid)}
	select {
	case <-c.done:
		return nil // It exited before; the supervisor has reported it.
	default:
	}
	logger.Info("stopping", append(attrs, slog.Duration("timeout", c.prog.StopTimeout))...)
	start := time.Now()
	if err := syscall.Kill(-c.pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		logger.Warn("cannot signal child", append(attrs, slog.Any("err", err))...)
	}
	timer := time.NewTimer(c.prog.StopTimeout)
	defer timer.Stop()
	var why string
	select {
	case <-c.done:
		logger.Info("stopped", append(attrs, slog.String("exit", exitStatus(c.err)), slog.Duration("elapsed", time.Since(start)))...)
		return nil
	case <-timer.C:
		why = fmt.Sprintf("still running %s after SIGTERM", c.prog.StopTimeout)
	case <-ctx.Done():
		why = "stop cut short"
	}
	_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	<-c.done
	logger.Warn("killed", append(attrs, slog.String("reason", why))...)
	return fmt.Errorf("%s (pid %d): %s, killed it", c.prog.Name, c.pid, why)
}

// exitStatus describes how a child ended, from its Wait error.
func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
