// Package embeddednats runs a NATS server with JetStream inside the
// process, for `make run` and for tests. Production uses a real server.
package embeddednats

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultMaxPayload is the largest message the embedded server accepts,
// 8 MiB, so that the gateway's default 1 MiB maximum line fits with room for
// headers. The stock server default is 1 MiB.
const DefaultMaxPayload = 8 << 20

// Options configure an embedded server.
type Options struct {
	// Host to listen on. Defaults to 127.0.0.1.
	Host string
	// Port to listen on; 0 means 4222 and -1 picks a free port.
	Port int
	// StoreDir holds JetStream's files; required.
	StoreDir string
	// MaxPayload is the largest message accepted. Defaults to
	// [DefaultMaxPayload].
	MaxPayload int32
	// SyncInterval is how often JetStream fsyncs its files; 0 keeps the
	// server's default (2 minutes).
	SyncInterval time.Duration
	// SyncAlways fsyncs every write; slow but survives an OS crash.
	SyncAlways bool
	// Configure, if set, is called with the server's options once the
	// ones above are filled in, before the server starts: tests use it to
	// require users, nkeys, tokens, operator JWTs or TLS. What it sets is
	// kept across [Server.Restart].
	Configure func(*server.Options)
}

// Server is a running embedded NATS server.
type Server struct {
	*server.Server
	opts *server.Options
}

// Start starts a server and waits until it accepts connections.
func Start(opts Options, logger *slog.Logger) (*Server, error) {
	s, err := newServer(opts, "jetline-embedded", nil)
	if err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	logger.Info("embedded nats started", "url", s.ClientURL(), "store_dir", opts.StoreDir)
	return s, nil
}

// newServer fills in the server options of opts, named name; cluster, if
// set, is applied before opts.Configure. It does not start the server.
func newServer(opts Options, name string, cluster func(*server.Options)) (*Server, error) {
	if opts.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats needs a store directory")
	}
	sopts := &server.Options{
		ServerName:   name,
		Host:         opts.Host,
		Port:         opts.Port,
		JetStream:    true,
		StoreDir:     opts.StoreDir,
		MaxPayload:   opts.MaxPayload,
		SyncInterval: opts.SyncInterval,
		SyncAlways:   opts.SyncAlways,
		NoSigs:       true,
	}
	if sopts.Host == "" {
		sopts.Host = "127.0.0.1"
	}
	if sopts.Port == 0 {
		sopts.Port = 4222
	}
	if sopts.MaxPayload == 0 {
		sopts.MaxPayload = DefaultMaxPayload
	}
	if cluster != nil {
		cluster(sopts)
	}
	if opts.Configure != nil {
		opts.Configure(sopts)
	}
	return &Server{opts: sopts}, nil
}

func (s *Server) start() error {
	ns, err := server.NewServer(s.opts)
	if err != nil {
		return fmt.Errorf("configure embedded nats: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return fmt.Errorf("embedded nats on %s:%d did not become ready in 10s (is the port in use?)", s.opts.Host, s.opts.Port)
	}
	s.Server = ns
	// Keep the port for Restart even if it was picked at random.
	if tcp, ok := ns.Addr().(*net.TCPAddr); ok {
		s.opts.Port = tcp.Port
	}
	return nil
}

// Stop shuts the server down and waits for it. Safe to call twice, and on
// a cluster node that was never started.
func (s *Server) Stop() {
	if s.Server == nil {
		return
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart stops the server and starts a new one on the same port and store,
// as an operator restarting NATS would. Clients reconnect on their own.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}
