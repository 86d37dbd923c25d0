package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jetline/jetline/shared/devkit/childproc"
)

// Program is a child process for the [supervisor] to run.
type Program struct {
	// Name prefixes every line the child prints and names it in the log
	// and in its log file.
	Name string
	// Path is the executable; Args are its arguments.
	Path string
	Args []string
	// Env is added to the runner's own environment; where a variable
	// appears twice, the later value wins. A restarted child gets the same
	// environment, so it keeps its ports.
	Env []string
	// StopTimeout is how long the child may take to exit after SIGTERM
	// before its process group is killed.
	StopTimeout time.Duration
}

// restartPolicy says how the [supervisor] restarts children that exit
// without being asked to, after OTP's supervisors: each exit is followed by
// a restart after a backoff, unless that restart would be the
// (Intensity+1)th of all children within Period, in which case the
// supervisor gives up and the stack stops.
type restartPolicy struct {
	// Intensity is how many restarts Period may hold; 0 stops the stack on
	// the first unexpected exit.
	Intensity int
	// Period is the sliding window the restarts are counted in.
	Period time.Duration
	// MinBackoff is the wait before the first restart of a child; it
	// doubles with each restart up to MaxBackoff, and falls back to
	// MinBackoff once a run has lasted StableRun.
	MinBackoff, MaxBackoff, StableRun time.Duration
}

// Backoff defaults of the runner. A child that crashes at once is started
// again after 0.1, 0.2, 0.4, 0.8 and 1.6 s: with the default intensity
// (5 in 30 s) the stack stops about 3 s plus six start-ups after the first
// crash, which is soon enough to see the message, and slow enough not to
// spin on a child that needs a moment (Postgres releasing its shared memory).
const (
	defaultMinBackoff = 100 * time.Millisecond
	defaultMaxBackoff = 5 * time.Second
	defaultStableRun  = 10 * time.Second
)

// instance is one run of a supervised child.
type instance interface {
	// Pid is the process id of the run.
	Pid() int
	// Done is closed once the run has ended.
	Done() <-chan struct{}
	// Exited reports whether Done is closed.
	Exited() bool
	// Err says how the run ended, in the words of [exec.Cmd.Wait]; nil for
	// status 0. Valid once Done is closed.
	Err() error
	// Terminate asks the run to stop and waits until it has; after timeout,
	// or when ctx is done, it kills it and the error, wrapping
	// [childproc.ErrKilled], names the run and says why.
	Terminate(ctx context.Context, timeout time.Duration) error
}

// service is anything the supervisor can start again: a [Program], or the
// private Postgres server.
type service struct {
	name string
	// start begins a run. ctx is done once the supervisor stops the
	// service, which should cut a slow start short.
	start func(ctx context.Context) (instance, error)
	// stopTimeout is passed to [instance.Terminate].
	stopTimeout time.Duration
	// describe is logged with "started", e.g. the program's path.
	describe []any
	// logPath is where the service's output is kept, or "" if only on the
	// terminal.
	logPath string
}

// supervisor runs children in groups, restarts those that exit on their own
// (see [restartPolicy]), and stops them group by group, the last group
// started first, the members of a group in parallel. Each child gets its own
// process group, so a Ctrl-C in the terminal reaches only the runner, which
// then decides the order; and the kernel kills each child if the runner
// dies, so nothing outlives it.
//
// When the restart intensity is exceeded the supervisor fails:
// [supervisor.Failed] is closed and [supervisor.Err] says which child keeps
// failing, how it last exited and where its output is. It restarts nothing
// after that; the caller is expected to [supervisor.Stop]. Methods are safe
// for concurrent use.
type supervisor struct {
	logger *slog.Logger
	out    io.Writer // shared by all children; must serialise whole writes
	width  int       // names are padded to this width in the output prefix
	logDir string    // each program's output is also appended to logDir/<name>.log; "" for none
	policy restartPolicy

	mu       sync.Mutex
	groups   [][]*child
	restarts []restartEvent // within the last policy.Period
	stopped  bool           // Stop was called: restart nothing

	failOnce sync.Once
	failed   chan struct{}
	failErr  error
}

// restartEvent is one restart, counted against the intensity.
type restartEvent struct {
	at   time.Time
	name string
}

// newSupervisor returns a supervisor writing the children's output to out,
// which must be safe for concurrent use, with names padded to width, and
// also to logDir/<name>.log unless logDir is "".
func newSupervisor(out io.Writer, width int, logDir string, policy restartPolicy, logger *slog.Logger) *supervisor {
	return &supervisor{
		logger: logger.With(slog.String("component", "supervisor")),
		out:    out,
		width:  width,
		logDir: logDir,
		policy: policy,
		failed: make(chan struct{}),
	}
}

// Failed is closed when a child keeps failing: the restart intensity was
// exceeded.
func (s *supervisor) Failed() <-chan struct{} { return s.failed }

// Err says which child kept failing, once [supervisor.Failed] is closed; nil
// before.
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
	svcs := make([]service, len(progs))
	for i, p := range progs {
		svcs[i] = s.programService(p)
	}
	return s.startGroup(svcs...)
}

// startGroup starts svcs as one group, as [supervisor.Start] does.
func (s *supervisor) startGroup(svcs ...service) error {
	s.mu.Lock()
	s.groups = append(s.groups, nil)
	g := len(s.groups) - 1
	s.mu.Unlock()
	for _, svc := range svcs {
		ctx, cancel := context.WithCancel(context.Background())
		c := &child{svc: svc, ctx: ctx, cancel: cancel, stopCh: make(chan struct{}), exited: make(chan struct{})}
		inst, err := svc.start(ctx)
		if err != nil {
			cancel()
			return fmt.Errorf("start %s: %w", svc.name, err)
		}
		c.inst = inst
		s.mu.Lock()
		s.groups[g] = append(s.groups[g], c)
		s.mu.Unlock()
		s.logger.Info("started", append([]any{slog.String("child", svc.name), slog.Int("pid", inst.Pid())}, svc.describe...)...)
		go s.supervise(c, inst)
	}
	return nil
}

// Stop stops every child, the group started last first, and waits for them;
// a child waiting to be restarted is not. A child still running after its
// StopTimeout, or when ctx is done, is killed with its whole process group;
// the error lists those. Safe to call twice.
func (s *supervisor) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
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

// supervise waits for each run of c to end and, unless c was asked to stop,
// starts the next one after a backoff, until the restart intensity is
// exceeded or c is stopped.
func (s *supervisor) supervise(c *child, inst instance) {
	defer close(c.exited)
	backoff := s.policy.MinBackoff
	var startErr error
	for {
		var exit string
		if inst != nil {
			began := time.Now()
			<-inst.Done()
			if c.stopRequested() {
				return
			}
			exit = exitStatus(inst.Err())
			ran := time.Since(began)
			if ran >= s.policy.StableRun {
				backoff = s.policy.MinBackoff
			}
			s.logger.Warn("child exited unexpectedly", slog.String("child", c.svc.name), slog.Int("pid", inst.Pid()),
				slog.String("exit", exit), slog.Duration("ran", ran.Round(time.Millisecond)))
		} else {
			exit = "could not start: " + startErr.Error()
		}
		n, err := s.countRestart(c.svc, exit)
		if err != nil {
			s.fail(err)
			return
		}
		if n < 0 {
			return // The stack is stopping.
		}
		s.logger.Info("restarting", slog.String("child", c.svc.name), slog.String("exit", exit),
			slog.Duration("after", backoff), slog.String("restarts", fmt.Sprintf("%d of %d in %s", n, s.policy.Intensity, s.policy.Period)))
		select {
		case <-time.After(backoff):
		case <-c.stopCh:
			return
		}
		backoff = min(2*backoff, s.policy.MaxBackoff)
		inst, startErr = c.restart()
		switch {
		case errors.Is(startErr, errStopping):
			return
		case startErr != nil:
			s.logger.Warn("restart failed", slog.String("child", c.svc.name), slog.Any("err", startErr))
		default:
			s.logger.Info("restarted", append([]any{slog.String("child", c.svc.name), slog.Int("pid", inst.Pid())}, c.svc.describe...)...)
		}
	}
}

// countRestart records a restart of svc, whose run ended with exit, and
// returns how many restarts the window now holds; -1 if the supervisor is
// stopping or has failed, so nothing is restarted. It returns an error
// saying which child keeps failing when the restart would exceed the
// intensity.
func (s *supervisor) countRestart(svc service, exit string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.Err() != nil {
		return -1, nil
	}
	now := time.Now()
	s.restarts = slices.DeleteFunc(s.restarts, func(r restartEvent) bool { return now.Sub(r.at) >= s.policy.Period })
	s.restarts = append(s.restarts, restartEvent{at: now, name: svc.name})
	if len(s.restarts) <= s.policy.Intensity {
		return len(s.restarts), nil
	}
	own := 0
	for _, r := range s.restarts {
		if r.name == svc.name {
			own++
		}
	}
	where := fmt.Sprintf("its output is in %s", svc.logPath)
	if svc.logPath == "" {
		where = fmt.Sprintf("its output is above, each line prefixed with %q", svc.name+" |")
	}
	return 0, fmt.Errorf("%s keeps failing (last exit: %s): %d restarts within %s, %d of them its own, exceed the %d allowed (JETLINE_RESTART_INTENSITY in JETLINE_RESTART_PERIOD); %s",
		svc.name, exit, len(s.restarts), s.policy.Period, own, s.policy.Intensity, where)
}

// fail records that the restart intensity was exceeded; only the first
// time counts.
func (s *supervisor) fail(err error) {
	s.failOnce.Do(func() {
		s.failErr = err
		s.logger.Error("giving up", slog.Any("err", err))
		close(s.failed)
	})
}

// errStopping is returned by [child.restart] once the child was asked to
// stop.
var errStopping = errors.New("stopping")

// child is a supervised [service] and its current run.
type child struct {
	svc    service
	ctx    context.Context // done once the child is asked to stop
	cancel context.CancelFunc
	stopCh chan struct{} // closed once the child is asked to stop
	exited chan struct{} // closed once supervise has returned: no run is left or coming

	mu       sync.Mutex
	inst     instance // the current or last run
	stopping bool

	stopOnce sync.Once
	stopErr  error
}

// stopRequested reports whether the child was asked to stop.
func (c *child) stopRequested() bool {
	select {
	case <-c.stopCh:
		return true
	default:
		return false
	}
}

// restart starts the next run, unless the child is being stopped.
func (c *child) restart() (instance, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return nil, errStopping
	}
	inst, err := c.svc.start(c.ctx)
	if err != nil {
		return nil, err
	}
	c.inst = inst
	return inst, nil
}

// stop stops the current run (see [instance.Terminate]) and makes sure no
// other follows, and waits until the child's supervision has ended. Safe to
// call twice and on a child whose run has already ended.
func (c *child) stop(ctx context.Context, logger *slog.Logger) error {
	c.stopOnce.Do(func() { c.stopErr = c.terminate(ctx, logger) })
	return c.stopErr
}

func (c *child) terminate(ctx context.Context, logger *slog.Logger) error {
	c.cancel() // Cut a restart in progress short before taking mu.
	c.mu.Lock()
	c.stopping = true
	close(c.stopCh)
	inst := c.inst
	c.mu.Unlock()
	defer func() { <-c.exited }()

	attrs := []any{slog.String("child", c.svc.name), slog.Int("pid", inst.Pid())}
	if inst.Exited() {
		return nil // It exited before; the supervisor has reported it.
	}
	logger.Info("stopping", append(attrs, slog.Duration("timeout", c.svc.stopTimeout))...)
	start := time.Now()
	if err := inst.Terminate(ctx, c.svc.stopTimeout); err != nil {
		logger.Warn("killed", append(attrs, slog.String("reason", err.Error()))...)
		return err
	}
	logger.Info("stopped", append(attrs, slog.String("exit", exitStatus(inst.Err())), slog.Duration("elapsed", time.Since(start)))...)
	return nil
}

// programService returns p as a service whose runs are processes (see
// [childproc.Start]); their stdout and stderr go, line by line and prefixed
// with p's name, to the supervisor's output, and also, unprefixed, to
// logDir/<name>.log, with a line marking each start.
func (s *supervisor) programService(p Program) service {
	logPath := ""
	if s.logDir != "" {
		logPath = filepath.Join(s.logDir, p.Name+".log")
	}
	return service{
		name:        p.Name,
		stopTimeout: p.StopTimeout,
		describe:    []any{slog.String("path", p.Path)},
		logPath:     logPath,
		start: func(context.Context) (instance, error) {
			var logFile *os.File // nil without logDir, which makes Close a no-op
			if logPath != "" {
				f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
				if err != nil {
					return nil, fmt.Errorf("open log of %s: %w", p.Name, err)
				}
				fmt.Fprintf(f, "---- devrun: %s starting at %s ----\n", p.Name, time.Now().Format(time.RFC3339))
				logFile = f
			}
			cmd := exec.Command(p.Path, p.Args...)
			cmd.Env = append(os.Environ(), p.Env...)
			out := childproc.NewPrefixWriter(fmt.Sprintf("%-*s | ", s.width, p.Name), s.out)
			proc, err := childproc.Start(cmd, func(r io.Reader) {
				copyOutput(r, out, logFile)
				_ = out.Flush()
				_ = logFile.Close()
			})
			if err != nil {
				_ = logFile.Close()
				return nil, err // exec's error names p.Path.
			}
			return proc, nil
		},
	}
}

// copyOutput copies r to out and, when not nil, to file, until r ends. A
// failed write is dropped rather than returned: stopping to read would
// block the child, or kill it with SIGPIPE.
func copyOutput(r io.Reader, out io.Writer, file *os.File) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = out.Write(buf[:n])
			if file != nil {
				_, _ = file.Write(buf[:n])
			}
		}
		if err != nil {
			return
		}
	}
}

// exitStatus describes how a child ended, from its Wait error.
func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
