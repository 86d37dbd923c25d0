package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
)

// clusterReplicas is the replication of the streams on an embedded
// cluster, unless INGEST_REPLICAS says otherwise.
const clusterReplicas = 3

// startNATS starts the embedded NATS server with JetStream on
// 127.0.0.1:cfg.NATSPort, storing into DataDir/nats, or a cluster of
// cfg.NATSNodes of them (see [Config.NATSNodes]), unless cfg.NATSURL names
// a server to use. It returns the URL for the children and a function
// that stops the servers (a no-op for an external one).
func startNATS(cfg Config, logger *slog.Logger) (url string, stop func(), err error) {
	logger = logger.With(slog.String("component", "nats"))
	if cfg.NATSURL != "" {
		logger.Info("using the nats server in NATS_URL")
		return cfg.NATSURL, func() {}, nil
	}
	if cfg.NATSNodes > 1 {
		return startNATSCluster(cfg, logger)
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

// startNATSCluster starts cfg.NATSNodes embedded servers routed into one
// JetStream cluster and waits for its meta leader. The children inherit
// the runner's environment, so INGEST_REPLICAS=3 is set there when the
// developer has not chosen.
func startNATSCluster(cfg Config, logger *slog.Logger) (url string, stop func(), err error) {
	for i := range cfg.NATSNodes {
		for _, port := range []int{cfg.NATSPort + i, cfg.NATSPort + embeddednats.RoutePortOffset + i} {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			hint := fmt.Sprintf("stop that process, or set JETLINE_NATS_PORT so that %d client ports and the route ports %d above them are free", cfg.NATSNodes, embeddednats.RoutePortOffset)
			if err := checkPortFree(addr, "node "+strconv.Itoa(i+1)+" of the embedded NATS cluster", hint); err != nil {
				return "", nil, err
			}
		}
	}
	if _, set := os.LookupEnv("INGEST_REPLICAS"); !set {
		if err := os.Setenv("INGEST_REPLICAS", strconv.Itoa(clusterReplicas)); err != nil {
			return "", nil, err
		}
	}
	storeDir := filepath.Join(cfg.DataDir, "nats")
	c, err := embeddednats.StartCluster(embeddednats.Options{
		Host:     "127.0.0.1",
		Port:     cfg.NATSPort,
		StoreDir: storeDir,
	}, cfg.NATSNodes, logger)
	if err != nil {
		return "", nil, fmt.Errorf("start embedded nats cluster of %d nodes (stores in %s): %w", cfg.NATSNodes, storeDir, err)
	}
	logger.Info("embedded nats cluster up", slog.Int("nodes", cfg.NATSNodes), slog.String("url", c.URL()),
		slog.String("ingest_replicas", os.Getenv("INGEST_REPLICAS")))
	return c.URL(), func() {
		c.Stop()
		logger.Info("embedded nats cluster stopped")
	}, nil
}
