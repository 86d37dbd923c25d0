package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// runner brings up NATS, Postgres, the gateway and the workers, and takes
// them down again in the reverse order.
type runner struct {
	cfg Config
	// logger is the base logger; components add their own attribute.
	logger *slog.Logger
	// out receives the children's output, one whole line per Write; it
	// must be safe for concurrent use.
	out io.Writer
	// banner receives the instructions printed once everything is up.
	banner io.Writer
	// childLogFormat is passed to the children as LOG_FORMAT when the user
	// did not set it, so their output suits the runner's terminal.
	childLogFormat string
}

// endpoint is where a child serves /healthz and /readyz.
type endpoint struct {
	name string
	addr string // host:port
}

// readyURL is the child's readiness URL.
func (e endpoint) readyURL() string { return "http://" + e.addr + "/readyz" }

// run starts everything and blocks until ctx is done or a child keeps
// failing, then stops the children (gateway first, then the workers), then
// Postgres, then NATS (a cluster's nodes are children too, started first
// and stopped last). A child that exits on its own is restarted (see
// [supervisor]). Stopping honours each child's StopTimeout until hurry is
// done, and kills what is left from then on. It returns an error when
// something could not start or a child exceeded the restart intensity.
func (r *runner) run(ctx, hurry context.Context) error {
	if err := r.checkBinaries(); err != nil {
		return err
	}
	gateway, workers, endpoints := r.programs()
	if err := r.checkChildPorts(endpoints); err != nil {
		return err
	}

	var natsURL string
	if !r.cfg.natsCluster() {
		url, stopNATS, err := startNATS(r.cfg, r.logger)
		if err != nil {
			return err
		}
		defer stopNATS()
		natsURL = url
	}
	logDir := filepath.Join(r.cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("create the children's log directory: %w", err)
	}
	sup := newSupervisor(r.out, nameWidth(gateway, workers), logDir, r.cfg.restartPolicy(), r.logger)
	// Stopped last of the children: the workers may still be committing.
	defer func() {
		if stopErr := sup.Stop(hurry); stopErr != nil {
			r.log().Warn("some children had to be killed", slog.Any("err", stopErr))
		}
	}()

	if r.cfg.natsCluster() {
		url, err := startNATSNodes(ctx, r.cfg, sup, r.childEnv(), r.logger)
		if err != nil {
			if ctx.Err() != nil {
				return nil // Interrupted while the cluster was forming.
			}
			return err
		}
		natsURL = url
	}

	dbURL, pg, err := startPostgres(ctx, r.cfg, r.logger)
	if err != nil {
		if ctx.Err() != nil {
			return nil // Interrupted while Postgres was starting.
		}
		return err
	}
	if pg != nil {
		if err := sup.startGroup(postgresService(pg, postgresDir(r.cfg))); err != nil {
			stopCtx, cancel := context.WithTimeout(hurry, postgresStopTimeout)
			defer cancel()
			return errors.Join(err, pg.Stop(stopCtx))
		}
	}

	gateway.Env = append(gateway.Env, "NATS_URL="+natsURL)
	for i := range workers {
		workers[i].Env = append(workers[i].Env, "NATS_URL="+natsURL, "DATABASE_URL="+dbURL)
	}

	// Workers before the gateway: the gateway is stopped first, so that no
	// new lines arrive while the workers drain what they have fetched.
	startErr := sup.Start(workers...)
	if startErr == nil {
		startErr = sup.Start(gateway)
	}
	if startErr == nil {
		r.waitReady(ctx, sup, endpoints)
		select {
		case <-sup.Failed():
		case <-ctx.Done():
		default:
			r.printBanner(natsURL, dbURL)
		}
		select {
		case <-sup.Failed():
		case <-ctx.Done():
			r.log().Info("shutting down (Ctrl-C again to kill everything at once)")
		}
	}
	return errors.Join(startErr, sup.Err())
}

// log is the logger for the runner's own messages.
func (r *runner) log() *slog.Logger {
	return r.logger.With(slog.String("component", "devrun"))
}

// programs returns the gateway and worker programs with the environment the
// runner controls (NATS_URL and DATABASE_URL are added once known), and
// their readiness URLs.
func (r *runner) programs() (gateway Program, workers []Program, endpoints []endpoint) {
	env := func(extra ...string) []string { return append(r.childEnv(), extra...) }
	healthAddr := func(offset int) string {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.cfg.HealthPort+offset))
	}

	gatewayEnv := env("GATEWAY_HEALTH_ADDR=" + healthAddr(0))
	var workerEnv []string
	if spec, ok := demoPipeline(); ok {
		gatewayEnv = append(gatewayEnv, "GATEWAY_LISTEN="+demoListen)
		workerEnv = append(workerEnv, "WORKER_PIPELINES="+spec)
	}
	gateway = Program{
		Name:        "gateway",
		Path:        r.cfg.GatewayBin,
		Env:         gatewayEnv,
		StopTimeout: r.cfg.StopTimeout,
	}
	endpoints = append(endpoints, endpoint{gateway.Name, healthAddr(0)})
	for i := 1; i <= r.cfg.Workers; i++ {
		name := fmt.Sprintf("worker-%d", i)
		workers = append(workers, Program{
			Name:        name,
			Path:        r.cfg.WorkerBin,
			Env:         env(append([]string{"WORKER_HEALTH_ADDR=" + healthAddr(i), "WORKER_INSTANCE=" + name}, workerEnv...)...),
			StopTimeout: r.cfg.StopTimeout,
		})
		endpoints = append(endpoints, endpoint{name, healthAddr(i)})
	}
	return gateway, workers, endpoints
}

// childEnv is what the runner adds to every child's environment: the log
// format that suits its terminal, unless the developer chose one.
func (r *runner) childEnv() []string {
	if _, set := os.LookupEnv("LOG_FORMAT"); !set && r.childLogFormat != "" {
		return []string{"LOG_FORMAT=" + r.childLogFormat}
	}
	return nil
}

// checkBinaries fails with a hint to build when a program is missing.
func (r *runner) checkBinaries() error {
	for _, b := range []struct{ name, path string }{{"gateway", r.cfg.GatewayBin}, {"worker", r.cfg.WorkerBin}} {
		info, err := os.Stat(b.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("%s program %s does not exist: run `make build` (or `make run`, which builds first)", b.name, b.path)
		case err != nil:
			return fmt.Errorf("check %s program: %w", b.name, err)
		case info.IsDir() || info.Mode().Perm()&0o111 == 0:
			return fmt.Errorf("%s program %s is not an executable file: run `make build`", b.name, b.path)
		}
	}
	return nil
}

// checkChildPorts makes sure the gateway's listen port (when left at its
// default) and the health ports the runner hands out are free, so a busy
// port is reported before anything starts.
func (r *runner) checkChildPorts(endpoints []endpoint) error {
	if _, set := os.LookupEnv("GATEWAY_LISTEN"); !set {
		if err := checkPortFree(":4000", "the gateway", "stop that process, or set GATEWAY_LISTEN=:4100 to listen elsewhere"); err != nil {
			return err
		}
		if _, demo := demoPipeline(); demo {
			if err := checkPortFree(":4001", "the gateway's tweets listener", "stop that process, or set GATEWAY_LISTEN=:4000 to run without the tweets pipelines"); err != nil {
				return err
			}
			if err := checkPortFree(":4002", "the gateway's tweets_full listener", "stop that process, or set GATEWAY_LISTEN=:4000,tweets=:4001 to run without the tweets-full pipeline"); err != nil {
				return err
			}
		}
	}
	for _, e := range endpoints {
		hint := "stop that process, or set JETLINE_HEALTH_PORT to a base port with room for the gateway and every worker"
		if err := checkPortFree(e.addr, "the health endpoint of "+e.name, hint); err != nil {
			return err
		}
	}
	return nil
}

// nameWidth is the width of the longest child name, for aligned prefixes.
func nameWidth(gateway Program, workers []Program) int {
	w := len(gateway.Name)
	for _, p := range workers {
		w = max(w, len(p.Name))
	}
	return w
}
