// Command devrun is the development runner behind `make run`: it starts an
// embedded NATS server and a private Postgres (unless NATS_URL and
// DATABASE_URL point elsewhere), then one gateway and two workers as child
// processes with their output prefixed by name (and kept in
// .data/logs/<name>.log), restarts any of them, Postgres included, that
// exits on its own, and on Ctrl-C stops the gateway, then the workers, then
// Postgres and NATS. A child that keeps failing (more than
// -restart-intensity restarts within -restart-period) stops everything.
//
// Usage:
//
//	devrun [-gateway .data/bin/gateway] [-worker .data/bin/worker] [-workers 2]
//	       [-restart-intensity 5] [-restart-period 30s]
//
// Everything else is configured through the environment; see [Config]. The
// children inherit the environment, so GATEWAY_*, WORKER_*, INGEST_* and
// LOG_* variables reach them. With JETLINE_NATS_NODE set, devrun is one
// node of the embedded cluster instead (JETLINE_NATS_NODES=3): the runner
// starts its nodes so.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/caarlos0/env/v11"

	"github.com/jetline/jetline/shared/devkit/childproc"
	"github.com/jetline/jetline/shared/runtime/logging"
)

func main() {
	if os.Getenv(natsNodeEnv) != "" {
		os.Exit(natsNodeMain())
	}
	cfg, err := env.ParseAs[Config]()
	if err != nil {
		fmt.Fprintf(os.Stderr, "devrun: %v\n", err)
		os.Exit(2)
	}
	flag.StringVar(&cfg.GatewayBin, "gateway", cfg.GatewayBin, "gateway `program` (JETLINE_GATEWAY_BIN)")
	flag.StringVar(&cfg.WorkerBin, "worker", cfg.WorkerBin, "worker `program` (JETLINE_WORKER_BIN)")
	flag.IntVar(&cfg.Workers, "workers", cfg.Workers, "number of workers (JETLINE_WORKERS)")
	flag.IntVar(&cfg.RestartIntensity, "restart-intensity", cfg.RestartIntensity, "restarts allowed within the restart period before everything stops (JETLINE_RESTART_INTENSITY)")
	flag.DurationVar(&cfg.RestartPeriod, "restart-period", cfg.RestartPeriod, "window the restart intensity counts in (JETLINE_RESTART_PERIOD)")
	flag.Parse()
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "devrun: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}

	// One serialised stream for the runner's log and every child's lines.
	out := &childproc.SyncWriter{W: os.Stderr}
	childLogFormat := ""
	if cfg.Log.Format == "auto" {
		// The children write into pipes and would pick JSON; on a
		// terminal, everyone speaks text.
		cfg.Log.Format = "json"
		if isTerminal(os.Stderr) {
			cfg.Log.Format, childLogFormat = "text", "text"
		}
	}
	logger := logging.New(cfg.Log, out)

	ctx, hurry, release := signalContexts(logger)
	defer release()
	r := &runner{cfg: cfg, logger: logger, out: out, banner: os.Stdout, childLogFormat: childLogFormat}
	if err := r.run(ctx, hurry); err != nil {
		logger.Error("devrun failed", "component", "devrun", "err", err)
		release()
		os.Exit(1)
	}
	logger.Info("all stopped", "component", "devrun")
}

// isTerminal reports whether f is a character device, such as a terminal.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
