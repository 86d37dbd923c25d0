package privatepg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetline/jetline/shared/devkit/childproc"
)

const (
	// readyTimeout bounds how long a start waits for connections.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds a fast shutdown when Stop's context has no deadline.
	stopTimeout = 10 * time.Second
)

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port already in use")

// Server is a running private postgres. Its methods are safe for concurrent
// use; Stop and Restart are serialised.
type Server struct {
	opts    Options // with defaults applied and Dir resolved
	binDir  string
	logPath string
	runAs   *osUser // nil: run as the current user
	port    int     // set once by Start; Restart reuses it
	logger  *slog.Logger

	lifecycle sync.Mutex // serialises Stop and Restart

	mu   sync.Mutex         // guards proc
	proc *childproc.Process // the postmaster; nil while stopped
}

// Start initialises opts.Dir if it holds no cluster yet, starts postgres,
// waits up to 30 s for it to accept connections and creates opts.Database if
// missing. The server keeps running after ctx ends; stop it with
// [Server.Stop]. A nil logger discards.
//
// Errors wrap [ErrNoBinaries] when initdb or postgres cannot be found and
// [ErrDirNotReachable] when, running as root, the unprivileged user cannot
// reach the data directory. When postgres fails to come up, the error ends
// with the tail of the server log.
func Start(ctx context.Context, opts Options, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With(slog.String("component", "privatepg"))

	opts, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	binDir, err := findBinDir(ctx, opts.BinDir)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	runAs, err := resolveRunAs(ctx, logger)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	logPath := opts.Dir + ".log"
	dir, err := prepareDir(opts.Dir, runAs)
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	opts.Dir = dir

	s := &Server{
		opts:    opts,
		binDir:  binDir,
		logPath: logPath,
		runAs:   runAs,
		logger:  logger,
	}
	if err := s.initdb(ctx); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if s.port, err = s.start(ctx, opts.Port); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if err := s.CreateDatabase(ctx, opts.Database); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
		defer cancel()
		return nil, errors.Join(fmt.Errorf("start postgres: %w", err), s.Stop(stopCtx))
	}
	return s, nil
}

// URL returns the DSN of [Options.Database], for example
// postgres://postgres@127.0.0.1:5432/jetline?sslmode=disable.
func (s *Server) URL() string {
	return s.URLFor(s.opts.Database)
}

// URLFor returns the DSN of database db on this server. It does not create
// db; see [Server.CreateDatabase].
func (s *Server) URLFor(db string) string {
	return dsn(s.opts.User, s.opts.Host, s.port, db)
}

// Port returns the TCP port the server listens on. It does not change
// across [Server.Restart].
func (s *Server) Port() int {
	return s.port
}

// LogPath returns the file postgres writes its log to: the data directory's
// path with ".log" appended. The log is appended to across starts, with a
// marker line before each.
func (s *Server) LogPath() string {
	return s.logPath
}

// CreateDatabase creates database name unless it exists. Concurrent calls
// for the same name are fine.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.URLFor("postgres"))
	if err != nil {
		return fmt.Errorf("create database %q: connect: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var exists bool
	err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		return fmt.Errorf("create database %q: check existence: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	// Losing a race with a concurrent CREATE DATABASE shows up as
	// duplicate_database or as a unique violation on pg_database.
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// Stop shuts postgres down with a fast shutdown (SIGINT: open transactions
// are rolled back, clients disconnected, a checkpoint written). It waits
// until ctx is done, or 10 s if ctx has no deadline, and then kills
// postgres and its backends with SIGKILL and returns an error saying so,
// wrapping [childproc.ErrKilled]. Stop on a stopped server returns nil, so
// calling it twice is fine.
func (s *Server) Stop(ctx context.Context) error {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	return s.stop(ctx)
}

// stop is Stop without the lifecycle lock.
func (s *Server) stop(ctx context.Context) error {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	defer func() {
		s.mu.Lock()
		if s.proc == p {
			s.proc = nil
		}
		s.mu.Unlock()
	}()

	if p.Exited() {
		s.logger.WarnContext(ctx, "postgres had already exited", slog.Any("error", p.Err()))
		return nil
	}
	start := time.Now()
	var timeout time.Duration // none: ctx's deadline bounds the shutdown
	if _, ok := ctx.Deadline(); !ok {
		timeout = stopTimeout
	}
	if err := p.Stop(ctx, syscall.SIGINT, timeout); err != nil {
		killDirProcs(s.opts.Dir, 5*time.Second) // The postmaster held the lock: the leftovers are its own.
		return err
	}
	s.logger.InfoContext(ctx, "postgres stopped",
		slog.Int("pid", p.Pid()), slog.Duration("elapsed", time.Since(start)))
	return nil
}

// Kill sends SIGKILL to postgres and all its backends, as a crash would, and
// waits for them to die. On the next start postgres runs crash recovery.
// Kill on a stopped server does nothing. It is meant for fault tests.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		kill(p, s.opts.Dir)
		s.logger.Info("postgres killed", slog.Int("pid", p.Pid()))
	}
}

// Process returns the running postmaster, whose [childproc.Process.Done] is
// closed when it exits, be it by Stop, Kill or a crash; nil while the
// server is stopped or killed. [Server.Restart] starts another. Stop it
// through the Server, which also cleans up its backends.
func (s *Server) Process() *childproc.Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Pids returns the server's live processes, the postmaster and its
// backends: those working in its data directory. It is empty while the
// server is stopped, and on systems other than Linux.
func (s *Server) Pids() []int { return dirProcs(s.opts.Dir) }

// Restart stops postgres as [Server.Stop] does and starts it again on the
// same data directory and port, waiting up to 30 s for connections. On a
// stopped or killed server it just starts it, so a fault test can Stop,
// wait, and Restart. A stop that had to resort to SIGKILL is logged, not
// returned, since the server is back up afterwards.
func (s *Server) Restart(ctx context.Context) error {
	s.lifecycle.Lock()
	defer s.lifecycle.Unlock()
	if err := s.stop(ctx); err != nil {
		s.logger.WarnContext(ctx, "postgres did not stop cleanly before restart", slog.Any("error", err))
	}
	if _, err := s.start(ctx, s.port); err != nil {
		return fmt.Errorf("restart postgres: %w", err)
	}
	return nil
}

// initdb creates the cluster unless the data directory already holds one.
func (s *Server) initdb(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(s.opts.Dir, "PG_VERSION")); err == nil {
		s.logger.DebugContext(ctx, "reusing existing cluster", slog.String("dir", s.opts.Dir))
		return nil
	}
	logFile, err := openLog(s.logPath, s.runAs, "initdb "+s.opts.Dir)
	if err != nil {
		return err
	}
	defer logFile.Close()

	args := []string{
		"--pgdata", s.opts.Dir,
		"--username", s.opts.User,
		"--auth", "trust",
		"--encoding", "UTF8",
		"--locale", "C",
	}
	if isOff(s.opts.Settings["fsync"]) {
		args = append(args, "--no-sync")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.binDir, "initdb"), args...)
	cmd.Dir = s.opts.Dir
	cmd.Env = childEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(s.runAs)

	start := time.Now()
	if err := cmd.Run(); err != nil {
		return withLogTail(fmt.Errorf("initdb %s: %w", s.opts.Dir, err), s.logPath)
	}
	s.logger.InfoContext(ctx, "initialised postgres cluster",
		slog.String("dir", s.opts.Dir), slog.Duration("elapsed", time.Since(start)))
	return nil
}

// start launches the postmaster on port, or on a free port when port is 0,
// waits until it accepts connections and returns the port. A free port can
// be taken by someone else between choosing and binding it, so that case is
// retried.
func (s *Server) start(ctx context.Context, port int) (int, error) {
	attempts := 1
	if port == 0 {
		attempts = 3
	}
	var err error
	for range attempts {
		p := port
		if p == 0 {
			if p, err = freePort(s.opts.Host); err != nil {
				return 0, err
			}
		}
		err = s.startOn(ctx, p)
		if err == nil {
			return p, nil
		}
		if port != 0 || !errors.Is(err, errPortInUse) {
			return 0, err
		}
		s.logger.WarnContext(ctx, "chosen port was taken, retrying", slog.Int("port", p))
	}
	return 0, err
}

// startOn launches the postmaster on port and waits for it to be ready.
func (s *Server) startOn(ctx context.Context, port int) error {
	logFile, err := openLog(s.logPath, s.runAs, fmt.Sprintf("postgres on %s", net.JoinHostPort(s.opts.Host, strconv.Itoa(port))))
	if err != nil {
		return err
	}
	// Not CommandContext: the server must outlive ctx.
	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), s.args(port)...)
	cmd.Dir = s.opts.Dir
	cmd.Env = childEnv()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr(s.runAs)

	start := time.Now()
	// If we die, even by SIGKILL, the postmaster dies with us; its backends
	// notice and exit on their own.
	p, err := childproc.Start(cmd, nil)
	logFile.Close() // The child holds its own descriptor.
	if err != nil {
		return fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	if err := s.waitReady(ctx, p, port); err != nil {
		kill(p, s.opts.Dir)
		err = withLogTail(err, s.logPath)
		if strings.Contains(logTail(s.logPath), "could not bind") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return err
	}

	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	attrs := []any{
		slog.Int("port", port),
		slog.Int("pid", p.Pid()),
		slog.String("dir", s.opts.Dir),
		slog.String("log", s.logPath),
		slog.Duration("elapsed", time.Since(start)),
	}
	if s.runAs != nil {
		attrs = append(attrs, slog.String("os_user", s.runAs.name))
	}
	s.logger.InfoContext(ctx, "postgres ready", attrs...)
	return nil
}

// args returns the postmaster's command line: defaults, then Settings.
func (s *Server) args(port int) []string {
	settings := map[string]string{
		"listen_addresses":        s.opts.Host,
		"unix_socket_directories": "",
		"max_connections":         "200",
		"shared_buffers":          "128MB",
	}
	maps.Copy(settings, s.opts.Settings)
	args := []string{"-D", s.opts.Dir, "-p", strconv.Itoa(port)}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

// waitReady polls until postgres accepts a connection, it exits, ctx ends
// or 30 s pass.
func (s *Server) waitReady(ctx context.Context, p *childproc.Process, port int) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	url := dsn(s.opts.User, s.opts.Host, port, "postgres")
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, url)
		cancelAttempt()
		if err == nil {
			return conn.Close(ctx)
		}
		lastErr = err
		select {
		case <-p.Done():
			return fmt.Errorf("postgres exited during startup: %v", p.Err())
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections on port %d: %w (last attempt: %v)", port, context.Cause(ctx), lastErr)
		case <-tick.C:
		}
	}
}

// freePort asks the kernel for a free TCP port on host.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// dsn builds a postgres URL without password and without TLS.
func dsn(user, host string, port int, db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(user),
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// isOff reports whether a boolean setting value means false to postgres.
func isOff(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "off", "false", "no", "0":
		return true
	}
	return false
}
