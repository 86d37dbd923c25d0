package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/privatepg"
)

// postgresSettings are the bench's Postgres settings on top of privatepg's
// defaults. Durability stays as in production (fsync and synchronous_commit
// on): it is part of what is measured. Commit timestamps give each row's
// commit time for the latency; a large max_wal_size and a long
// checkpoint_timeout keep checkpoints out of a run of a minute or two, as
// they would be spread thin on a tuned production server.
var postgresSettings = map[string]string{
	"fsync":                  "on",
	"synchronous_commit":     "on",
	"track_commit_timestamp": "on",
	"max_wal_size":           "4GB",
	"checkpoint_timeout":     "30min",
}

// reportedSettings are the Postgres settings the report shows, whatever
// their source, so that a reader sees what the numbers were measured with.
var reportedSettings = []string{
	"fsync", "synchronous_commit", "full_page_writes", "track_commit_timestamp",
	"max_wal_size", "checkpoint_timeout", "shared_buffers", "wal_buffers",
	"wal_compression", "wal_writer_delay", "commit_delay", "default_toast_compression",
}

// harnessOwned are the child variables the bench sets itself, which -env
// must not override, with the flag that sets them where there is one.
var harnessOwned = map[string]string{
	"NATS_URL": "", "DATABASE_URL": "", "LOG_FORMAT": "",
	"GATEWAY_LISTEN": "", "GATEWAY_HEALTH_ADDR": "", "GATEWAY_INSTANCE": "",
	"WORKER_HEALTH_ADDR": "", "WORKER_INSTANCE": "", "WORKER_TABLE": "", "WORKER_PIPELINES": "-spec",
}

// harness is the environment of one run: a temporary directory, an
// embedded NATS server and a private Postgres, and the programs under test.
// [startHarness] builds it; [harness.close] tears all of it down.
type harness struct {
	dir  string // temporary root, removed by close
	nats *embeddednats.Server
	nc   *nats.Conn
	js   jetstream.JetStream

	pg       *privatepg.Server
	pgDir    string // resolved data directory, to find its processes
	binaries binaries

	children []*child
}

// startHarness finds the programs, creates the temporary directory,
// starts NATS and Postgres, and notes their versions and settings in rep.
// On error everything started is torn down again.
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
	dir, err := os.MkdirTemp("", "jetline-bench-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	h.dir = dir
	defer func() {
		if err != nil {
			err = errors.Join(err, h.close(context.WithoutCancel(ctx)))
			started = nil
		}
	}()
	// Postgres runs as an unprivileged user when we are root, and must be
	// able to reach its data directory inside.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make %s searchable: %w", dir, err)
	}

	pr.step("starting NATS (embedded, JetStream file store in %s)", dir)
	syncAlways, syncInterval, syncText, _ := cfg.natsSync()
	h.nats, err = embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: filepath.Join(dir, "nats"),
		SyncAlways: syncAlways, SyncInterval: syncInterval}, logger)
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	rep.NATS = natsFacts{Store: "embedded, JetStream file store, " + syncText}
	if vz, err := h.nats.Varz(nil); err == nil {
		rep.NATS.Version = vz.Version
	}
	h.nc, err = nats.Connect(h.nats.ClientURL(), nats.Name("jetline-bench"))
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}

	pr.step("starting Postgres (private, fsync on)")
	h.pg, err = privatepg.Start(ctx, privatepg.Options{Dir: filepath.Join(dir, "pg", "data"), Settings: postgresSettings}, logger)
	if err != nil {
		return nil, err // privatepg's errors say what to do
	}
	if h.pgDir, err = filepath.EvalSymlinks(filepath.Join(dir, "pg", "data")); err != nil {
		return nil, fmt.Errorf("resolve postgres data directory: %w", err)
	}
	rep.Postgres, err = readPGFacts(ctx, h.pg.URL())
	return &h, err
}

// binary is one program under test.
type binary struct {
	// Path is the absolute path of the executable.
	Path string `json:"path"`
}

// binaries are the programs under test.
type binaries struct {
	Gateway binary `json:"gateway"`
	Worker  binary `json:"worker"`
}

// readPGFacts returns the server's version and the values of
// reportedSettings, as the server reports them.
func readPGFacts(ctx context.Context, url string) (pgFacts, error) {
	var f pgFacts
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return f, fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&f.Version); err != nil {
		return f, fmt.Errorf("read postgres version: %w", err)
	}
	for _, name := range reportedSettings {
		s := setting{Name: name}
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&s.Value); err != nil {
			return f, fmt.Errorf("read postgres setting %s: %w", name, err)
		}
		f.Settings = append(f.Settings, s)
	}
	return f, nil
}

// close stops the children that still run, then Postgres and NATS, and
// removes the temporary directory. It is safe on a partly started harness
// and safe to call twice.
func (h *harness) close(ctx context.Context) error {
	var errs []error
	errs = append(errs, stopChildren(h.children, childStopTimeout))
	h.children = nil
	if h.nc != nil {
		h.nc.Close()
		h.nc = nil
	}
	if h.pg != nil {
		stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := h.pg.Stop(stopCtx); err != nil {
			errs = append(errs, err)
		}
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
