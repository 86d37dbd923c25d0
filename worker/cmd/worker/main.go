// Command worker moves received lines from NATS JetStream into PostgreSQL.
// Configuration comes from the environment; see worker.Config.
//
// Usage:
//
//	worker                               run the worker
//	worker healthcheck                   probe this worker's /readyz; exit 0 if ready, 1 if not
//	worker check-spec FILE [SAMPLE]      check a pipeline spec; show what it makes of each sample line
//	worker dlq list|show|replay|purge    read, replay or purge dead letters; worker dlq -h for more
//	worker status [--json]               backlog, workers, dead letters, throughput and a verdict
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/logging"
	"github.com/jetline/jetline/shared/runtime/metrics"
	"github.com/jetline/jetline/shared/runtime/natsconn"
	"github.com/jetline/jetline/shared/runtime/secret"
	"github.com/jetline/jetline/worker"
	"github.com/jetline/jetline/worker/pipeline"
)

// command is a sub-command; no argument runs the worker.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, cfg worker.Config, args []string) error
}

var commands = []command{
	{"healthcheck", "probe this worker's /readyz; exit 0 if ready, 1 if not", healthcheck},
	{"check-spec", "FILE [SAMPLE.ndjson]: check a pipeline spec; show the row, or why not, for each sample line", checkSpec},
	{"dlq", "list|show SEQ|replay|purge: read, replay or purge dead letters (worker dlq -h)", dlqCommand},
	{"status", "[--interval D] [--json]: backlog, workers, dead letters, throughput and a verdict", statusCommand},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string) (err error) {
	cfg, err := env.ParseAs[worker.Config]()
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	// Errors may quote DATABASE_URL or NATS_URL: never print a password.
	defer func() { err = secret.Scrub(err, secret.ConfigSecrets(cfg)...) }()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if len(args) == 0 {
		return run(ctx, cfg)
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, cfg, args[1:])
		}
	}
	return fmt.Errorf("unknown command %q; run without arguments to start the worker, or use one of:%s", args[0], usage())
}

func usage() string {
	var s string
	for _, c := range commands {
		s += fmt.Sprintf("\n  %-12s %s", c.name, c.usage)
	}
	return s
}

// run wires the worker's dependencies and runs it until ctx is done.
func run(ctx context.Context, cfg worker.Config) error {
	instance := cfg.InstanceName()
	logger := logging.New(cfg.Log, os.Stderr).With("instance", instance)
	secret.LogConfig(logger, cfg)
	// Mistakes in a spec stop the worker before it connects to anything.
	pipelines, err := loadPipelines(cfg.Pipelines)
	if err != nil {
		return err
	}

	// /healthz and /readyz answer from the start: while the worker waits
	// for NATS or for a forming JetStream cluster, an orchestrator sees it
	// alive, not ready, and why.
	hs := health.New(cfg.HealthAddr, logger)
	startup := health.NewStartup("connecting to NATS at " + secret.RedactURLs(cfg.NATS.URL))
	hs.AddCheck("startup", startup.Check)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Run(gctx) })
	g.Go(func() error { return work(gctx, cfg, pipelines, hs, startup, logger) })
	return g.Wait()
}

// work connects to NATS, sets up the streams and the consumer, opens the
// database and runs the worker until ctx is done. It returns nil when ctx
// ends it while it waits.
func work(ctx context.Context, cfg worker.Config, pipelines []worker.Pipeline, hs *health.Server, startup *health.Startup, logger *slog.Logger) error {
	nc, js, err := natsconn.Connect(ctx, cfg.NATS, "jetline-worker/"+cfg.InstanceName(), logger)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer nc.Close()
	hs.AddCheck("nats", natsconn.Connected(nc))
	retry := topology.Retry{Timeout: cfg.NATS.ConnectTimeout, Logger: logger, Waiting: startup.Waiting}
	startup.Waiting("creating or updating stream " + topology.StreamName)
	stream, err := retry.EnsureStream(ctx, js, cfg.Stream)
	if err != nil {
		return interrupted(ctx, err)
	}
	startup.Waiting("creating or updating stream " + deadletter.StreamName)
	if _, err := deadletter.EnsureStreamWith(ctx, js, cfg.DLQ, cfg.Stream.Replicas, retry); err != nil {
		return interrupted(ctx, err)
	}
	startup.Waiting("creating or updating consumer " + topology.ConsumerName)
	cons, err := retry.EnsureConsumer(ctx, js, cfg.Consumer())
	if err != nil {
		return interrupted(ctx, err)
	}

	pool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	hs.AddCheck("postgres", pool.Ping)
	router, stores, err := worker.Routes(pool, cfg.Table, pipelines, logger)
	if err != nil {
		return err
	}
	for _, p := range pipelines {
		logPipeline(logger, p)
	}
	opts := cfg.Options(js)
	// Lines published without a message id are identified by the
	// stream's creation time and their sequence.
	opts.StreamCreated = stream.CachedInfo().Created
	w, err := worker.New(cons, router, opts, logger)
	if err != nil {
		return err
	}
	popts := cfg.Presence()
	// The bucket is for operators: its waits are logged, not reported
	// as the worker's readiness.
	popts.Retry = topology.Retry{Timeout: cfg.NATS.ConnectTimeout, Logger: logger}
	presence, err := worker.NewPresence(js, w, popts, logger)
	if err != nil {
		return err
	}
	hs.Handle("GET "+metrics.Path, metrics.Handler(logger, w.Metrics(js)))
	startup.Done()

	// Acks are published asynchronously: flush them before leaving.
	defer func() {
		if err := natsconn.Drain(nc, cfg.ShutdownTimeout); err != nil {
			logger.Warn("leaving", "err", err)
		}
	}()
	// The worker is listed from now (a worker waiting for the database is
	// connected, just not storing) until it has finished its batches, and
	// its entry is deleted before the drain.
	defer runUntilReturn(context.WithoutCancel(ctx), presence.Run)()
	for _, store := range stores {
		if err := createTable(ctx, store, logger); err != nil {
			return interrupted(ctx, err)
		}
	}
	// main prefixes "worker:"; Run's errors say what failed.
	return w.Run(ctx)
}

// interrupted returns nil if ctx is done (the worker was stopped while it
// waited), else err.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// runUntilReturn runs component on ctx in its own goroutine and returns a
// function that cancels it and waits for it to return. The component's
// error is dropped: it is for components that log their own failures and
// must not stop the program, like [worker.Presence].
func runUntilReturn(ctx context.Context, component func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = component(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// loadPipelines loads every spec in files.
func loadPipelines(files []string) ([]worker.Pipeline, error) {
	var out []worker.Pipeline
	for _, f := range files {
		p, err := pipeline.Load(f)
		if err != nil {
			return nil, fmt.Errorf("WORKER_PIPELINES: %w", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// logPipeline logs the tables pipeline p fills, and warns of each that
// updates without a version.
func logPipeline(logger *slog.Logger, p worker.Pipeline) {
	var tables []string
	for _, t := range p.Tables() {
		name := strings.Join(t.Ident(), ".")
		switch {
		case t.Delete:
			tables = append(tables, "delete "+name)
		case t.Update && t.Version != "":
			tables = append(tables, "upsert "+name+" by "+t.Version)
		case t.Update:
			tables = append(tables, "upsert "+name)
			logger.Warn("this table updates without a version: the last committed row of a key wins, and which that is is undefined across workers; add version: COLUMN to the spec to make it defined",
				"pipeline", p.String(), "table", name)
		default:
			tables = append(tables, name)
		}
	}
	logger.Info("pipeline", "file", p.String(), "source", p.Source(), "tables", tables)
}

// checkSpec checks the spec file args[0] and, given a sample file
// args[1], shows what the pipeline makes of each of its lines.
func checkSpec(_ context.Context, _ worker.Config, args []string) error {
	return checkSpecTo(os.Stdout, args)
}

func checkSpecTo(w io.Writer, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return errors.New("usage: worker check-spec FILE [SAMPLE.ndjson]")
	}
	p, err := pipeline.Load(args[0])
	if err != nil {
		return err
	}
	out := bufio.NewWriter(w)
	defer out.Flush()
	p.Describe(out)
	if len(args) == 1 {
		return nil
	}
	f, err := os.Open(args[1])
	if err != nil {
		return fmt.Errorf("open sample: %w", err)
	}
	defer f.Close()
	return p.Check(out, f)
}

// openPool connects to Postgres with room for every concurrent batch plus
// the readiness probe. It does not wait for the database: the worker keeps
// retrying while it is down, and /readyz says so.
func openPool(ctx context.Context, cfg worker.Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if minConns := int32(cfg.Concurrency + 1); pc.MaxConns < minConns {
		pc.MaxConns = minConns
	}
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pc.ConnConfig.RuntimeParams["application_name"] = "jetline-worker"
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open postgres pool: %w", err)
	}
	return pool, nil
}

// createTable creates the destination table, waiting for the database to
// come up if it is not there yet (readiness says so meanwhile).
func createTable(ctx context.Context, store *worker.PostgresStore, logger *slog.Logger) error {
	wait := 250 * time.Millisecond
	for {
		err := store.CreateTables(ctx)
		if err == nil || worker.Classify(err) != worker.Transient {
			return err
		}
		logger.Info("waiting for postgres", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// healthcheck probes the running worker's /readyz on WORKER_HEALTH_ADDR.
func healthcheck(_ context.Context, cfg worker.Config, _ []string) error {
	return health.ProbeLocal("WORKER_HEALTH_ADDR", cfg.HealthAddr)
}
