package main

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
)

// startNATS starts the embedded NATS server with JetStream on
// 127.0.0.1:cfg.NATSPort, storing into DataDir/nats, unless cfg.NATSURL
// names a server to use. It returns the URL for the children and a function
// that stops the server (a no-op for an external one).
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
