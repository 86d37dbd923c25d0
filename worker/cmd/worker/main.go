// Command worker moves received lines from NATS JetStream into PostgreSQL.
// Configuration comes from the environment; see worker.Config.
//
// Usage:
//
//	worker              run the worker
//	worker healthcheck  probe this worker's /readyz; exit 0 if ready, 1 if not
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/jetline/jetline/shared/health"
	"github.com/jetline/jetline/shared/logging"
	"github.com/jetline/jetline/shared/topology"
	"github.com/jetline/jetline/worker"
)

// command is a sub-command; no argument runs the worker.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, cfg worker.Config, args []string) error
}

var commands = []command{
	{"healthcheck", "probe this worker's /readyz; exit 0 if ready, 1 if not", healthcheck},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string) error {
	cfg, err := env.ParseAs[worker.Config]()
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
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

	nc, js, err := topology.Connect(ctx, cfg.NATS, "jetline-worker/"+instance, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := topology.EnsureStream(ctx, js, cfg.Stream); err != nil {
		return err
	}
	cons, err := topology.EnsureConsumer(ctx, js, cfg.Consumer())
	if err != nil {
		return err
	}

	pool, err := openPool(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	transform, err := worker.NewRawLanding(cfg.Table)
	if err != nil {
		return err
	}
	store, err := worker.NewPostgresStore(pool, transform.Table(), logger)
	if err != nil {
		return err
	}
	w, err := worker.New(cons, transform, store, cfg.Options(), logger)
	if err != nil {
		return err
	}

	hs := health.New(cfg.HealthAddr, logger)
	hs.AddCheck("nats", topology.Connected(nc))
	hs.AddCheck("postgres", pool.Ping)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Run(gctx) })
	g.Go(func() error {
		// Acks are published asynchronously: flush them before leaving.
		defer func() {
			if err := topology.Drain(nc, cfg.ShutdownTimeout); err != nil {
				logger.Warn("leaving", "err", err)
			}
		}()
		if err := createTable(gctx, store, logger); err != nil {
			if gctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := w.Run(gctx); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		return nil
	})
	return g.Wait()
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
		err := store.CreateTable(ctx)
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
