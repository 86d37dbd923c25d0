// Command gateway runs jetline's TCP gateway: it receives newline-delimited
// JSON over plain TCP or TLS and stores every line in the JetStream ingest stream.
// Configuration comes from the environment; see gateway.Config.
//
// `gateway healthcheck` probes the running gateway's /readyz on this host
// and exits 0 if it is ready, 1 if not, for container health checks.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	"golang.org/x/sync/errgroup"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/logging"
	"github.com/jetline/jetline/shared/runtime/metrics"
	"github.com/jetline/jetline/shared/runtime/natsconn"
	"github.com/jetline/jetline/shared/runtime/secret"
)

// drainTimeout bounds flushing the NATS connection at exit.
const drainTimeout = 10 * time.Second

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		err = healthcheck()
	} else {
		err = run()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	cfg, err := env.ParseAs[gateway.Config]()
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	// Errors may quote NATS_URL: never print its password.
	defer func() { err = secret.Scrub(err, secret.ConfigSecrets(cfg)...) }()
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	logger := logging.New(cfg.Log, os.Stderr)
	secret.LogConfig(logger, cfg)
	gateway.RaiseOpenFilesLimit(cfg.MaxConnections, logger)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// /healthz and /readyz answer from the start: while the gateway waits
	// for NATS or for a forming JetStream cluster, an orchestrator sees it
	// alive, not ready, and why.
	hs := health.New(cfg.HealthAddr, logger)
	startup := health.NewStartup("connecting to NATS at " + secret.RedactURLs(cfg.NATS.URL))
	hs.AddCheck("startup", startup.Check)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Run(gctx) })
	g.Go(func() error { return serve(gctx, cfg, hs, startup, logger) })
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// serve connects to NATS, sets up the streams and runs the gateway until
// ctx is done. It returns nil when ctx ends it while it waits.
func serve(ctx context.Context, cfg gateway.Config, hs *health.Server, startup *health.Startup, logger *slog.Logger) error {
	nc, js, err := natsconn.Connect(ctx, cfg.NATS, "jetline-gateway", logger)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer func() {
		if err := natsconn.Drain(nc, drainTimeout); err != nil {
			logger.Warn("leaving", "err", err)
		}
	}()
	hs.AddCheck("nats", natsconn.Connected(nc))
	retry := topology.Retry{Timeout: cfg.NATS.ConnectTimeout, Logger: logger, Waiting: startup.Waiting}
	startup.Waiting("creating or updating stream " + topology.StreamName)
	if _, err := retry.EnsureStream(ctx, js, cfg.Stream); err != nil {
		return interrupted(ctx, err)
	}
	// Lines over the maximum length go to the dead-letter stream.
	startup.Waiting("creating or updating stream " + deadletter.StreamName)
	if _, err := deadletter.EnsureStreamWith(ctx, js, cfg.DLQ, cfg.Stream.Replicas, retry); err != nil {
		return interrupted(ctx, err)
	}
	gw, err := gateway.New(cfg, nc, logger)
	if err != nil {
		return err
	}
	startup.Waiting("creating or updating key-value bucket " + topology.UploadsBucket)
	if err := gw.SetupUploads(ctx, retry); err != nil {
		return interrupted(ctx, err)
	}
	hs.Handle("GET "+metrics.Path, metrics.Handler(logger, gw.Metrics()))
	startup.Done()
	return gw.Run(ctx)
}

// interrupted returns nil if ctx is done (the gateway was stopped while it
// waited), else err.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// healthcheck probes /readyz of the gateway running on this host.
func healthcheck() error {
	cfg, err := env.ParseAs[gateway.Config]()
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	return health.ProbeLocal("GATEWAY_HEALTH_ADDR", cfg.HealthAddr)
}
