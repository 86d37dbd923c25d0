// Package natsconn connects a program to NATS: the URL, credentials and TLS
// settings it reads from the environment, checked before the first dial;
// retrying the first connection; and draining it at shutdown.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/runtime/secret"
)

// Config is how a program reaches NATS: where, and with which
// credentials and TLS settings. NATS takes one way of authenticating: a
// user and password (or a token) in URL, a .creds file, an nkey seed or a
// token. TLS is used when the URL says tls:// or any TLS file is set.
type Config struct {
	// URL is a comma-separated list of NATS server URLs. It may carry
	// credentials, nats://user:password@host:4222 or nats://token@host:4222;
	// they are hidden in logs. Defaults to nats://127.0.0.1:4222, where
	// `make run` starts an embedded server.
	URL string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	// ConnectTimeout bounds the first connection, and then the creation of
	// each JetStream object the program needs while the servers or their
	// cluster are still forming (see [Retry]). Defaults to 30s.
	ConnectTimeout time.Duration `env:"NATS_CONNECT_TIMEOUT" envDefault:"30s"`
	// Creds is the path of a user credentials file (a JWT and its nkey
	// seed, as `nsc generate creds` writes), for servers in operator mode.
	// Defaults to none.
	Creds string `env:"NATS_CREDS"`
	// NKey is the path of a file holding a user's nkey seed (SU…), for
	// servers that list nkey users. Defaults to none.
	NKey string `env:"NATS_NKEY"`
	// Token authenticates with the server's authorization token. Defaults
	// to none.
	Token secret.Value `env:"NATS_TOKEN"`
	// TLSCA is the path of a PEM file of the CA certificates the server's
	// certificate is checked against, instead of the system's. Defaults to
	// none.
	TLSCA string `env:"NATS_TLS_CA"`
	// TLSCert and TLSKey are the paths of the PEM client certificate and
	// its private key, for servers that verify clients; set both or
	// neither. Default to none.
	TLSCert string `env:"NATS_TLS_CERT"`
	TLSKey  string `env:"NATS_TLS_KEY"`
}

// Validate reports, in terms an operator can act on, what is wrong with c:
// a URL that does not parse, two ways of authenticating at once, half a
// client certificate, or a file that cannot be read.
func (c Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.URL) == "" {
		errs = append(errs, errors.New("NATS_URL is empty: set it to the NATS server, e.g. nats://127.0.0.1:4222"))
	}
	credsInURL := false
	for _, u := range strings.Split(c.URL, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "nats://" + u // as the NATS client reads it
		}
		parsed, err := url.Parse(u)
		if err != nil {
			// url.Parse quotes the whole URL, password and all: keep only why.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			errs = append(errs, fmt.Errorf("NATS_URL entry %s is not a URL (%v): use e.g. nats://host:4222 or nats://user:password@host:4222, with special characters in the password percent-encoded",
				secret.RedactURLs(u), secret.Scrub(err, secret.URLSecrets(u)...)))
			continue
		}
		credsInURL = credsInURL || parsed.User != nil
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("NATS_CONNECT_TIMEOUT must be positive (got %s)", c.ConnectTimeout))
	}
	errs = append(errs, c.validateCredentials(credsInURL))
	return errors.Join(errs...)
}

// Connect opens a NATS connection named name that reconnects forever, and a
// JetStream context on it. It retries the first connection until
// cfg.ConnectTimeout so programs may start before the server, but gives up
// at once when the server refuses the credentials or the TLS handshake
// fails: waiting does not mend those. Connection state changes are logged
// on logger. Neither the log lines nor the error it returns hold a
// password or token.
func Connect(ctx context.Context, cfg Config, name string, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	secrets := cfg.secrets()
	auth, err := cfg.authOptions()
	if err != nil {
		return nil, nil, err
	}
	opts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", secret.Scrub(err, secrets...))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", secret.Scrub(err, secrets...)}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			logger.Warn("nats async error", attrs...)
		}),
	}, auth...)
	where := secret.RedactURLs(cfg.URL)
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
		err = secret.Scrub(err, secrets...)
		if hint := refusal(err); hint != "" {
			return nil, nil, fmt.Errorf("connect to nats at %s: %w: %s", where, err, hint)
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("connect to nats at %s (is the server running? set NATS_URL): %w", where, err)
		}
		logger.Info("waiting for nats", "url", where, "err", err)
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
