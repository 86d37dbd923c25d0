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
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/devkit/childproc"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/privatepg"
)

// postgresSettings are the bench's Postgres settings on top of privatepg's.
// Durability stays as in production (fsync, synchronous_commit): it is part
// of what is measured. Commit timestamps give the latency; max_wal_size and
// checkpoint_timeout keep checkpoints out of a run of a minute or two, as a
// tuned server spreads them thin. The report shows reportedSettings.
var (
	postgresSettings = map[string]string{"fsync": "on", "synchronous_commit": "on", "track_commit_timestamp": "on",
		"max_wal_size": "4GB", "checkpoint_timeout": "30min"}
	reportedSettings = []string{"fsync", "synchronous_commit", "full_page_writes", "track_commit_timestamp",
		"max_wal_size", "checkpoint_timeout", "shared_buffers", "wal_buffers",
		"wal_compression", "wal_writer_delay", "commit_delay", "default_toast_compression"}
)

// harnessOwned are the child variables the bench sets itself, which -env
// must not override, with a hint where a flag sets them.
var harnessOwned = map[string]string{
	"NATS_URL": "", "DATABASE_URL": "", "LOG_FORMAT": "",
	"GATEWAY_LISTEN": "", "GATEWAY_HEALTH_ADDR": "", "GATEWAY_INSTANCE": "",
	"WORKER_HEALTH_ADDR": "", "WORKER_INSTANCE": "", "WORKER_TABLE": "", "WORKER_PIPELINES": ": choose the spec with -spec",
}

// Children exit within childStopTimeout of SIGTERM or their process group
// is killed: the programs' own shutdown timeouts are 30 s, but after a run
// they have nothing left to flush. A child's last tailLines output lines
// go into the error of an exit nobody asked for.
const (
	childStopTimeout = 20 * time.Second
	tailLines        = 20
)

// harness is one run's temporary directory, embedded NATS, private
// Postgres and running children; [harness.close] tears it down.
type harness struct {
	dir      string // temporary root, removed by close
	nats     *embeddednats.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	pg       *privatepg.Server
	binaries binaries
	children []*child
}

// binaries are the programs under test, by absolute path.
type binaries struct {
	Gateway binary `json:"gateway"`
	Worker  binary `json:"worker"`
}

type binary struct {
	Path string `json:"path"`
}

// startHarness finds the programs, starts NATS and Postgres in a new
// temporary directory and notes their versions and settings in rep. On
// error everything started is torn down again.
func startHarness(ctx context.Context, cfg Config, logger *slog.Logger, pr *progress, rep *Report) (started *harness, err error) {
	var h harness
	for _, p := range []struct {
		bin        *binary
		name, path string
	}{{&h.binaries.Gateway, "gateway", cfg.GatewayBin}, {&h.binaries.Worker, "worker", cfg.WorkerBin}} {
		info, err := os.Stat(p.path)
		if err == nil && info.IsDir() {
			err = errors.New("a directory, not a program")
		}
		if err != nil {
			return nil, fmt.Errorf("-%s-bin %s: %w: run make build, which makes .data/bin/%s, or name the program to run", p.name, p.path, err, p.name)
		}
		if p.bin.Path, err = filepath.Abs(p.path); err != nil {
			return nil, err
		}
	}
	rep.Binaries = h.binaries
	if h.dir, err = os.MkdirTemp("", "jetline-bench-"); err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, h.close(context.WithoutCancel(ctx)))
			started = nil
		}
	}()
	// Postgres runs as an unprivileged user when we are root, and must be
	// able to reach its data directory inside.
	if err := os.Chmod(h.dir, 0o755); err != nil {
		return nil, fmt.Errorf("make %s searchable: %w", h.dir, err)
	}

	pr.step("starting NATS (embedded, JetStream file store in %s)", h.dir)
	syncAlways, syncInterval, syncText, _ := cfg.natsSync()
	h.nats, err = embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: filepath.Join(h.dir, "nats"),
		SyncAlways: syncAlways, SyncInterval: syncInterval}, logger)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	rep.NATS = natsFacts{Store: "embedded, JetStream file store, " + syncText}
	if vz, err := h.nats.Varz(nil); err == nil {
		rep.NATS.Version = vz.Version
	}
	if h.nc, err = nats.Connect(h.nats.ClientURL(), nats.Name("jetline-bench")); err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}

	pr.step("starting Postgres (private, fsync on)")
	dataDir := filepath.Join(h.dir, "pg", "data")
	if h.pg, err = privatepg.Start(ctx, privatepg.Options{Dir: dataDir, Settings: postgresSettings}, logger); err != nil {
		return nil, err // privatepg's errors say what to do
	}
	conn, err := pgx.Connect(ctx, h.pg.URL())
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&rep.Postgres.Version); err != nil {
		return nil, fmt.Errorf("read postgres version: %w", err)
	}
	for _, name := range reportedSettings {
		s := setting{Name: name}
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&s.Value); err != nil {
			return nil, fmt.Errorf("read postgres setting %s: %w", name, err)
		}
		rep.Postgres.Settings = append(rep.Postgres.Settings, s)
	}
	return &h, nil
}

// close stops the children, Postgres and NATS, and removes the temporary
// directory; it is safe on a partly started harness and twice.
func (h *harness) close(ctx context.Context) error {
	errs := []error{stopChildren(h.children)}
	h.children = nil
	if h.nc != nil {
		h.nc.Close()
		h.nc = nil
	}
	if h.pg != nil {
		stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		errs = append(errs, h.pg.Stop(stopCtx))
		cancel()
		h.pg = nil
	}
	if h.nats != nil {
		h.nats.Stop()
		h.nats = nil
	}
	if h.dir != "" {
		if err := os.RemoveAll(h.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", h.dir, err))
		}
		h.dir = ""
	}
	return errors.Join(errs...)
}

// child is a gateway or worker process. Its output lines go, prefixed with
// its name, to the bench's standard error; its last tailLines are kept for
// the error when it exits unexpectedly. Methods are safe for concurrent use.
type child struct {
	name, prefix string
	pid          int
	proc         *childproc.Process
	out          io.Writer

	mu   sync.Mutex
	tail []string
}

// startChild starts path with env added to the bench's environment less
// the variables that configure jetline (so the programs run with their
// defaults plus what the bench sets, not what the caller's shell holds),
// under [childproc.Start], and adds it to the harness's children.
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

// childEnviron drops from env the variables that configure jetline.
func childEnviron(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return name == "DATABASE_URL" || slices.ContainsFunc([]string{"GATEWAY_", "WORKER_", "INGEST_", "NATS_", "LOG_"},
			func(p string) bool { return strings.HasPrefix(name, p) })
	})
}

// Write is given one prefixed output line at a time by the child's
// [childproc.PrefixWriter]. A failed write is dropped rather than
// returned: stopping to read would block the child.
func (c *child) Write(line []byte) (int, error) {
	c.mu.Lock()
	c.tail = append(c.tail, strings.TrimSuffix(strings.TrimPrefix(string(line), c.prefix), "\n"))
	c.tail = c.tail[max(0, len(c.tail)-tailLines):]
	c.mu.Unlock()
	_, _ = c.out.Write(line)
	return len(line), nil
}

// exited returns the error of the first of cs that has exited, with its
// last output lines, or nil.
func exited(cs []*child) error {
	for _, c := range cs {
		if !c.proc.Exited() {
			continue
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		status := "status 0"
		if err := c.proc.Err(); err != nil {
			status = err.Error()
		}
		if len(c.tail) == 0 {
			return fmt.Errorf("%s (pid %d) exited unexpectedly: %s", c.name, c.pid, status)
		}
		return fmt.Errorf("%s (pid %d) exited unexpectedly: %s; last output:\n  %s", c.name, c.pid, status, strings.Join(c.tail, "\n  "))
	}
	return nil
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
	if err := stopChildren(cs); err != nil {
		return fmt.Errorf("stop %s: %w", what, err)
	}
	return nil
}

// stopChildren stops cs at once with SIGTERM, killing a child after
// childStopTimeout, and fails on a non-zero exit status after SIGTERM; a
// child that had exited already is left to [exited] to report.
func stopChildren(cs []*child) error {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		if c.proc.Exited() {
			continue
		}
		wg.Go(func() {
			if errs[i] = c.proc.Terminate(context.Background(), childStopTimeout); errs[i] == nil && c.proc.Err() != nil {
				errs[i] = fmt.Errorf("%s (pid %d) exited with %v after SIGTERM", c.name, c.pid, c.proc.Err())
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
