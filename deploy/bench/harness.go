package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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

// checkPGSetting refuses -pg settings that would weaken durability, which
// would make the numbers meaningless for the product.
func checkPGSetting(name, value string) error {
	off := func() bool {
		switch strings.ToLower(value) {
		case "off", "false", "no", "0":
			return true
		}
		return false
	}
	switch strings.ToLower(name) {
	case "fsync", "full_page_writes":
		if off() {
			return fmt.Errorf("-pg %s=%s would weaken durability; the bench measures with it on", name, value)
		}
	case "synchronous_commit":
		if off() {
			return fmt.Errorf("-pg synchronous_commit=%s would acknowledge lines before their rows are durable; the bench measures with it on", value)
		}
	case "port", "track_commit_timestamp":
		return fmt.Errorf("-pg %s is set by the bench", name)
	}
	return nil
}

// harnessOwned are the child variables the bench sets itself, which -env
// must not override, with the flag that sets them where there is one.
var harnessOwned = map[string]string{
	"NATS_URL": "", "DATABASE_URL": "", "LOG_FORMAT": "",
	"GATEWAY_LISTEN": "", "GATEWAY_HEALTH_ADDR": "", "GATEWAY_INSTANCE": "",
	"WORKER_HEALTH_ADDR": "", "WORKER_INSTANCE": "", "WORKER_TABLE": "", "WORKER_PIPELINES": "-spec",
	"WORKER_CONCURRENCY": "-worker-concurrency", "WORKER_BATCH_SIZE": "-batch",
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
	pgDir    string    // resolved data directory, to find its processes
	pgFacts  []setting // reportedSettings as the server reports them
	pgVer    string
	natsVer  string
	binaries binaries

	children []*child
}

// setting is one server setting as reported by the server.
type setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// startHarness creates the temporary directory, starts NATS and Postgres,
// and finds or builds the programs. On error everything started is torn
// down again.
func startHarness(ctx context.Context, cfg Config, logger *slog.Logger, pr *progress) (started *harness, err error) {
	dir, err := os.MkdirTemp("", "jetline-bench-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	h := &harness{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, h.close(context.WithoutCancel(ctx)))
			started = nil
		}
	}()
	// Postgres runs as an unprivileged user when we are root, and must be
	// able to reach its data directory inside.
	if err := os.Chmod(dir, 0o755); err != nil {
		return h, fmt.Errorf("make %s searchable: %w", dir, err)
	}

	pr.step("starting NATS (embedded, JetStream file store in %s)", dir)
	syncAlways, syncInterval, _ := cfg.natsSync()
	h.nats, err = embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: filepath.Join(dir, "nats"),
		SyncAlways: syncAlways, SyncInterval: syncInterval}, logger)
	if err != nil {
		return h, fmt.Errorf("start nats: %w", err)
	}
	if vz, err := h.nats.Varz(nil); err == nil {
		h.natsVer = vz.Version
	}
	h.nc, err = nats.Connect(h.nats.ClientURL(), nats.Name("jetline-bench"))
	if err != nil {
		return h, fmt.Errorf("connect to nats: %w", err)
	}
	if h.js, err = jetstream.New(h.nc); err != nil {
		return h, fmt.Errorf("open jetstream: %w", err)
	}

	settings := maps.Clone(postgresSettings)
	maps.Copy(settings, cfg.PGSettings)
	pr.step("starting Postgres (private, fsync on)")
	h.pg, err = privatepg.Start(ctx, privatepg.Options{Dir: filepath.Join(dir, "pg", "data"), Settings: settings}, logger)
	if err != nil {
		return h, err // privatepg's errors say what to do
	}
	if h.pgDir, err = filepath.EvalSymlinks(filepath.Join(dir, "pg", "data")); err != nil {
		return h, fmt.Errorf("resolve postgres data directory: %w", err)
	}
	if err := h.readPGFacts(ctx, slices.Collect(maps.Keys(cfg.PGSettings))); err != nil {
		return h, err
	}

	for _, p := range []struct {
		bin        *binary
		name, path string
	}{{&h.binaries.Gateway, "gateway", cfg.GatewayBin}, {&h.binaries.Worker, "worker", cfg.WorkerBin}} {
		if *p.bin, err = findBinary(ctx, p.name, p.path, filepath.Join(dir, "bin"), pr); err != nil {
			return h, err
		}
	}
	return h, nil
}

// binary is one program under test.
type binary struct {
	// Path is the absolute path of the executable.
	Path string `json:"path"`
	// Built is true when the bench built it from source for this run.
	Built bool `json:"built"`
}

// binaries are the programs under test.
type binaries struct {
	Gateway binary `json:"gateway"`
	Worker  binary `json:"worker"`
}

func (b binary) describe() string {
	if b.Built {
		return "built from source"
	}
	return b.Path
}

// findBinary returns the program at path, or, when there is none, builds
// the module's program of that name into buildDir. Whether a program
// given is up to date is the caller's business: `make bench` builds them
// first, and go build knows what is stale.
func findBinary(ctx context.Context, name, path, buildDir string, pr *progress) (binary, error) {
	info, err := os.Stat(path)
	switch {
	case err == nil && info.IsDir():
		return binary{}, fmt.Errorf("-%s-bin %s is a directory, not a program", name, path)
	case err == nil:
		abs, err := filepath.Abs(path)
		return binary{Path: abs}, err
	case !errors.Is(err, fs.ErrNotExist):
		return binary{}, fmt.Errorf("check -%s-bin %s: %w", name, path, err)
	}
	pkg := fmt.Sprintf("github.com/jetline/jetline/%s/cmd/%s", name, name)
	out := filepath.Join(buildDir, name)
	pr.step("%s not found; building %s", path, pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return binary{}, fmt.Errorf("build %s (run the bench from inside the jetline module, with go on PATH): %w", pkg, err)
	}
	return binary{Path: out, Built: true}, nil
}

// readPGFacts records the server's version and the values of
// reportedSettings and of the settings given with -pg, as the server
// reports them.
func (h *harness) readPGFacts(ctx context.Context, extra []string) error {
	conn, err := pgx.Connect(ctx, h.pg.URL())
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&h.pgVer); err != nil {
		return fmt.Errorf("read postgres version: %w", err)
	}
	names := slices.Clone(reportedSettings)
	for _, name := range slices.Sorted(slices.Values(extra)) {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	for _, name := range names {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			return fmt.Errorf("read postgres setting %s: %w", name, err)
		}
		h.pgFacts = append(h.pgFacts, setting{Name: name, Value: v})
	}
	return nil
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
