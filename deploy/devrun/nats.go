package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/runtime/logging"
)

// clusterReplicas is the replication of the streams on an embedded
// cluster, unless INGEST_REPLICAS says otherwise.
const clusterReplicas = 3

// natsNodeEnv, set to a node's number (from 1), makes devrun run that one
// node of the embedded cluster (see [runNATSNode]) instead of the stack:
// the runner starts each node so, as a child process of its own that a
// developer can kill with the stock tools and the supervisor restarts on
// its store.
const natsNodeEnv = "JETLINE_NATS_NODE"

// natsNodeStopTimeout is how long a node may take to shut down after
// SIGTERM: it has only its files to close.
const natsNodeStopTimeout = 10 * time.Second

// metaLeaderTimeout bounds the wait for a started cluster to elect its
// JetStream meta leader.
const metaLeaderTimeout = 30 * time.Second

// startNATS starts the embedded NATS server with JetStream in the runner's
// process, on 127.0.0.1:cfg.NATSPort, storing into DataDir/nats, unless
// cfg.NATSURL names a server to use. It returns the URL for the children
// and a function that stops the server (a no-op for an external one). A
// cluster runs in processes of its own instead: see [startNATSNodes].
func startNATS(cfg Config, logger *slog.Logger) (url string, stop func(), err error) {
	logger = logger.With(slog.String("component", "nats"))
	if cfg.NATSURL != "" {
		logger.Info("using the nats server in NATS_URL")
		return cfg.NATSURL, func() {}, nil
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.NATSPort))
	hint := fmt.Sprintf("stop that process, or set NATS_URL=nats://%s to use it as the NATS server, or JETLINE_NATS_PORT to run the embedded one elsewhere", addr)
	if err := checkPortFree(addr, "the embedded NATS server", hint); err != nil {
		return "", nil, err
	}
	storeDir := filepath.Join(cfg.DataDir, "nats")
	srv, err := embeddednats.Start(embeddednats.Options{
		Host:     "127.0.0.1",
		Port:     cfg.NATSPort,
		StoreDir: storeDir,
	}, logger)
	if err != nil {
		return "", nil, fmt.Errorf("start embedded nats (store %s): %w", storeDir, err)
	}
	return srv.ClientURL(), func() {
		srv.Stop()
		logger.Info("embedded nats stopped")
	}, nil
}

// startNATSNodes starts the embedded cluster of cfg (see
// [Config.NATSNodes]) as one supervised group of node processes, this
// runner's executable run as [runNATSNode] with [natsNodeEnv] set, and
// waits for its meta leader. It returns the URL of every node, as
// NATS_URL takes them. The children inherit the runner's environment, so
// INGEST_REPLICAS=3 is set there when the developer has not chosen; env is
// added to each node's.
func startNATSNodes(ctx context.Context, cfg Config, sup *supervisor, env []string, logger *slog.Logger) (string, error) {
	logger = logger.With(slog.String("component", "nats"))
	for i := range cfg.NATSNodes {
		for _, port := range []int{cfg.NATSPort + i, cfg.NATSPort + embeddednats.RoutePortOffset + i} {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			hint := fmt.Sprintf("stop that process, or set JETLINE_NATS_PORT so that %d client ports and the route ports %d above them are free", cfg.NATSNodes, embeddednats.RoutePortOffset)
			if err := checkPortFree(addr, "node "+strconv.Itoa(i+1)+" of the embedded NATS cluster", hint); err != nil {
				return "", err
			}
		}
	}
	if _, set := os.LookupEnv("INGEST_REPLICAS"); !set {
		if err := os.Setenv("INGEST_REPLICAS", strconv.Itoa(clusterReplicas)); err != nil {
			return "", err
		}
	}
	c, err := natsCluster(cfg, logger)
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the runner's own executable, which runs the cluster's nodes: %w", err)
	}
	if err := sup.Start(natsNodePrograms(cfg, self, env)...); err != nil {
		return "", err
	}
	if err := waitForMetaLeader(ctx, c.URL(), sup, logger); err != nil {
		return "", err
	}
	logger.Info("embedded nats cluster up", slog.Int("nodes", cfg.NATSNodes), slog.String("url", c.URL()),
		slog.String("stores", filepath.Join(cfg.DataDir, "nats")), slog.String("ingest_replicas", os.Getenv("INGEST_REPLICAS")))
	return c.URL(), nil
}

// natsCluster describes the embedded cluster of cfg without starting any of
// it: its nodes' ports are fixed, so its URL is known up front.
func natsCluster(cfg Config, logger *slog.Logger) (*embeddednats.Cluster, error) {
	return embeddednats.NewCluster(embeddednats.Options{
		Host:     "127.0.0.1",
		Port:     cfg.NATSPort,
		StoreDir: filepath.Join(cfg.DataDir, "nats"),
	}, cfg.NATSNodes, logger)
}

// natsNodePrograms returns one program per node of the embedded cluster,
// named nats-1 … nats-n: self (this runner's executable) with
// [natsNodeEnv] set, told the cluster's shape and data directory by its
// environment, plus env.
func natsNodePrograms(cfg Config, self string, env []string) []Program {
	progs := make([]Program, cfg.NATSNodes)
	for i := range progs {
		progs[i] = Program{
			Name: "nats-" + strconv.Itoa(i+1),
			Path: self,
			Env: append([]string{
				natsNodeEnv + "=" + strconv.Itoa(i+1),
				"JETLINE_NATS_NODES=" + strconv.Itoa(cfg.NATSNodes),
				"JETLINE_NATS_PORT=" + strconv.Itoa(cfg.NATSPort),
				"JETLINE_DATA_DIR=" + cfg.DataDir,
			}, env...),
			StopTimeout: natsNodeStopTimeout,
		}
	}
	return progs
}

// natsNodeMain is devrun's main when [natsNodeEnv] is set: it runs that
// node (see [runNATSNode]) and returns the exit status.
func natsNodeMain() int {
	cfg, err := env.ParseAs[Config]()
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nats node: invalid configuration: %v\n", err)
		return 2
	}
	logger := logging.New(cfg.Log, os.Stderr).With(slog.String("component", "nats"))
	n, err := strconv.Atoi(os.Getenv(natsNodeEnv))
	if err == nil {
		err = runNATSNode(cfg, n, logger)
	}
	if err != nil {
		logger.Error("nats node failed", slog.Any("err", err))
		return 1
	}
	return 0
}

// runNATSNode runs node n (from 1) of the embedded cluster cfg describes,
// on its ports and store, until SIGINT or SIGTERM. It returns an error if
// the node cannot start or n is not one of the cluster's nodes.
func runNATSNode(cfg Config, n int, logger *slog.Logger) error {
	if n < 1 || n > cfg.NATSNodes {
		return fmt.Errorf("%s=%d: the cluster has nodes 1 to %d (JETLINE_NATS_NODES)", natsNodeEnv, n, cfg.NATSNodes)
	}
	c, err := natsCluster(cfg, logger)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.StartNode(n - 1); err != nil {
		return err
	}
	down := make(chan struct{})
	go func() {
		c.Node(n - 1).WaitForShutdown()
		close(down)
	}()
	select {
	case <-ctx.Done():
	case <-down:
		return fmt.Errorf("node %d shut down on its own; its log lines above say why", n)
	}
	c.StopNode(n - 1)
	logger.Info("embedded nats cluster node stopped", slog.Int("node", n))
	return nil
}

// waitForMetaLeader waits, through [topology.Retry] as the programs do,
// until the cluster at url answers JetStream requests, which it does once
// its nodes have elected a meta leader; it gives up when ctx is done, sup
// fails (a node keeps crashing) or [metaLeaderTimeout] passes.
func waitForMetaLeader(ctx context.Context, url string, sup *supervisor, logger *slog.Logger) error {
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to the embedded nats cluster at %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sup.Failed():
			cancel()
		case <-ctx.Done():
		}
	}()
	retry := topology.Retry{Timeout: metaLeaderTimeout, Logger: logger}
	err = retry.Do(ctx, "reach the JetStream API of the embedded nats cluster at "+url, func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	})
	if failed := sup.Err(); err != nil && failed != nil {
		return failed
	}
	return err
}
