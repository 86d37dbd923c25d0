package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/jetline/jetline/shared/runtime/logging"
)

// Config is the dev runner's configuration, read from the environment; the
// binary paths and the number of workers can also be given as flags.
type Config struct {
	// DataDir holds what survives a restart: the NATS store (DataDir/nats)
	// and the Postgres cluster (DataDir/postgres, log DataDir/postgres.log).
	// Defaults to .data.
	DataDir string `env:"JETLINE_DATA_DIR" envDefault:".data"`
	// GatewayBin is the gateway program. Defaults to .data/bin/gateway,
	// where `make build` puts it.
	GatewayBin string `env:"JETLINE_GATEWAY_BIN" envDefault:".data/bin/gateway"`
	// WorkerBin is the worker program. Defaults to .data/bin/worker.
	WorkerBin string `env:"JETLINE_WORKER_BIN" envDefault:".data/bin/worker"`
	// Workers is how many worker processes to run. Defaults to 2.
	Workers int `env:"JETLINE_WORKERS" envDefault:"2"`

	// NATSURL is a NATS server to use instead of starting an embedded one.
	// Empty (the default) starts one on 127.0.0.1:NATSPort.
	NATSURL string `env:"NATS_URL"`
	// NATSPort is the client port of the embedded NATS server. Defaults to
	// 4222.
	NATSPort int `env:"JETLINE_NATS_PORT" envDefault:"4222"`
	// NATSNodes is how many embedded NATS servers to run: 1 (the default)
	// runs one in the runner's process; 3 or more run a JetStream cluster
	// of supervised child processes nats-1 … nats-n (the runner's own
	// executable, see runNATSNode), which can be killed like any child and
	// are restarted on their store: node i (from 1) on client port
	// NATSPort+i-1 and route port NATSPort+2000+i-1, storing into
	// DataDir/nats/jetline-<i>. The other children are given every node's
	// URL, and, unless INGEST_REPLICAS is set, INGEST_REPLICAS=3
	// (`make run NATS_NODES=3`).
	NATSNodes int `env:"JETLINE_NATS_NODES" envDefault:"1"`
	// DatabaseURL is a Postgres database to use instead of starting a
	// private server. Empty (the default) starts one on
	// 127.0.0.1:PostgresPort.
	DatabaseURL string `env:"DATABASE_URL"`
	// PostgresPort is the port of the private Postgres server. Defaults to
	// 5433, so it does not collide with a system Postgres on 5432.
	PostgresPort int `env:"JETLINE_POSTGRES_PORT" envDefault:"5433"`
	// HealthPort is the gateway's health port on 127.0.0.1; worker i
	// (1-based) gets HealthPort+i. Defaults to 8080.
	HealthPort int `env:"JETLINE_HEALTH_PORT" envDefault:"8080"`

	// StopTimeout is how long each child may take to drain after SIGTERM
	// before it is killed. It must exceed the programs' own shutdown
	// timeouts. Defaults to 45s.
	StopTimeout time.Duration `env:"JETLINE_STOP_TIMEOUT" envDefault:"45s"`
	// ReadyTimeout is how long to wait for every child's /readyz before
	// printing the instructions anyway. Defaults to 60s.
	ReadyTimeout time.Duration `env:"JETLINE_READY_TIMEOUT" envDefault:"60s"`

	// RestartIntensity is how many restarts of children the runner makes
	// within RestartPeriod before it gives up and stops the whole stack,
	// naming the child that keeps failing; as in OTP, the restarts of all
	// children count together. 0 stops the stack at the first child that
	// exits on its own. Defaults to 5.
	RestartIntensity int `env:"JETLINE_RESTART_INTENSITY" envDefault:"5"`
	// RestartPeriod is the window RestartIntensity counts in. Defaults to
	// 30s: with backoffs of 0.1 s doubling to 5 s, a child that crashes at
	// once stops the stack within a few seconds, while a worker killed by
	// hand now and then is restarted for as long as the developer likes.
	RestartPeriod time.Duration `env:"JETLINE_RESTART_PERIOD" envDefault:"30s"`

	// Log configures the runner's own log; the children read the same
	// LOG_FORMAT and LOG_LEVEL.
	Log logging.Config
}

// natsCluster reports whether the runner runs an embedded cluster, in
// node processes of its own.
func (c Config) natsCluster() bool { return c.NATSURL == "" && c.NATSNodes > 1 }

// Validate reports what is wrong with c in terms a developer can act on.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("JETLINE_DATA_DIR is empty: set it to a directory for the NATS store and the Postgres data, e.g. .data"))
	}
	if c.GatewayBin == "" {
		errs = append(errs, errors.New("the gateway binary path is empty: pass -gateway or set JETLINE_GATEWAY_BIN (run `make build` first)"))
	}
	if c.WorkerBin == "" {
		errs = append(errs, errors.New("the worker binary path is empty: pass -worker or set JETLINE_WORKER_BIN (run `make build` first)"))
	}
	if c.Workers < 1 || c.Workers > 32 {
		errs = append(errs, fmt.Errorf("JETLINE_WORKERS must be between 1 and 32 (got %d)", c.Workers))
	}
	for _, p := range []struct {
		name string
		port int
	}{{"JETLINE_NATS_PORT", c.NATSPort}, {"JETLINE_POSTGRES_PORT", c.PostgresPort}} {
		if p.port < 1 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("%s must be a TCP port between 1 and 65535 (got %d)", p.name, p.port))
		}
	}
	if c.NATSNodes != 1 && c.NATSNodes < 3 || c.NATSNodes > 9 {
		errs = append(errs, fmt.Errorf("JETLINE_NATS_NODES must be 1, or 3 to 9 for a cluster that outlives a node (got %d)", c.NATSNodes))
	}
	if c.HealthPort < 1 || c.HealthPort+c.Workers > 65535 {
		errs = append(errs, fmt.Errorf("JETLINE_HEALTH_PORT must leave room for %d worker ports below 65536 (got %d)", c.Workers, c.HealthPort))
	}
	if c.StopTimeout <= 0 {
		errs = append(errs, fmt.Errorf("JETLINE_STOP_TIMEOUT must be positive (got %s)", c.StopTimeout))
	}
	if c.ReadyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("JETLINE_READY_TIMEOUT must be positive (got %s)", c.ReadyTimeout))
	}
	if c.RestartIntensity < 0 {
		errs = append(errs, fmt.Errorf("JETLINE_RESTART_INTENSITY must be 0 or more (got %d): 0 stops everything at the first crash", c.RestartIntensity))
	}
	if c.RestartPeriod <= 0 {
		errs = append(errs, fmt.Errorf("JETLINE_RESTART_PERIOD must be positive (got %s), e.g. 30s", c.RestartPeriod))
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// restartPolicy is the supervisor's policy for c, with the runner's
// backoffs.
func (c Config) restartPolicy() restartPolicy {
	return restartPolicy{
		Intensity:  c.RestartIntensity,
		Period:     c.RestartPeriod,
		MinBackoff: defaultMinBackoff,
		MaxBackoff: defaultMaxBackoff,
		StableRun:  defaultStableRun,
	}
}
