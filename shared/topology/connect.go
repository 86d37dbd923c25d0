package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSConfig is how a program reaches NATS.
type NATSConfig struct {
	// URL is a comma-separated list of NATS server URLs. Defaults to
	// nats://127.0.0.1:4222, where `make run` starts an embedded server.
	URL string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	// ConnectTimeout bounds the first connection. Defaults to 30s.
	ConnectTimeout time.Duration `env:"NATS_CONNECT_TIMEOUT" envDefault:"30s"`
}

// Validate reports what is wrong with c.
func (c NATSConfig) Validate() error {
	if c.URL == "" {
		return errors.New("NATS_URL is empty: set it to the NATS server, e.g. nats://127.0.0.1:4222")
	}
	if c.ConnectTimeout <= 0 {
		return fmt.Errorf("NATS_CONNECT_TIMEOUT must be positive (got %s)", c.ConnectTimeout)
	}
	return nil
}

// Connect opens a NATS connection named name that reconnects forever, and a
// JetStream context on it. It retries the first connection until
// cfg.ConnectTimeout so programs may start before the server. Connection
// state changes are logged on logger.
func Connect(ctx context.Context, cfg NATSConfig, name string, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			logger.Warn("nats async error", attrs...)
		}),
	}
	deadline := time.Now().Add(cfg.ConnectTimeout)
	wait := 100 * time.Millisecond
	for {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err == nil {
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return nil, nil, fmt.Errorf("open jetstream: %w", err)
			}
			logger.Info("nats connected", "server", nc.ConnectedUrlRedacted(), "max_payload", nc.MaxPayload())
			return nc, js, nil
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("connect to nats at %s (is the server running? set NATS_URL): %w", redact(cfg.URL), err)
		}
		logger.Info("waiting for nats", "url", redact(cfg.URL), "err", err)
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// Drain flushes what nc has buffered (publishes, acks), unsubscribes and
// closes it, waiting at most timeout before closing it anyway. Programs call
// it last on their way out.
func Drain(nc *nats.Conn, timeout time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("drain nats connection: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return fmt.Errorf("drain nats connection: timed out after %s; closed it", timeout)
	}
}

// Connected is a readiness check that passes while nc is connected.
func Connected(nc *nats.Conn) func(context.Context) error {
	return func(context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats connection is %s", s)
		}
		return nil
	}
}
