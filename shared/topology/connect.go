package topology

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/logging"
)

// NATSConfig is how a program reaches NATS: where, and with which
// credentials and TLS settings. NATS takes one way of authenticating: a
// user and password (or a token) in URL, a .creds file, an nkey seed or a
// token. TLS is used when the URL says tls:// or any TLS file is set.
type NATSConfig struct {
	// URL is a comma-separated list of NATS server URLs. It may carry
	// credentials, nats://user:password@host:4222 or nats://token@host:4222;
	// they are hidden in logs. Defaults to nats://127.0.0.1:4222, where
	// `make run` starts an embedded server.
	URL string `env:"NATS_URL" envDefault:"nats://127.0.0.1:4222"`
	// ConnectTimeout bounds the first connection. Defaults to 30s.
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
	Token logging.Secret `env:"NATS_TOKEN"`
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
func (c NATSConfig) Validate() error {
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
				logging.RedactURLs(u), logging.Scrub(err, logging.URLSecrets(u)...)))
			continue
		}
		credsInURL = credsInURL || parsed.User != nil
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("NATS_CONNECT_TIMEOUT must be positive (got %s)", c.ConnectTimeout))
	}
	var methods []string
	if credsInURL {
		methods = append(methods, "credentials in NATS_URL")
	}
	for _, m := range []struct{ name, value string }{{"NATS_CREDS", c.Creds}, {"NATS_NKEY", c.NKey}, {"NATS_TOKEN", c.Token.Reveal()}} {
		if m.value != "" {
			methods = append(methods, m.name)
		}
	}
	if len(methods) > 1 {
		errs = append(errs, fmt.Errorf("%s are all set, but NATS takes one way of authenticating: keep the one your server expects (user and password or token in NATS_URL, NATS_CREDS, NATS_NKEY or NATS_TOKEN)", strings.Join(methods, " and ")))
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		errs = append(errs, errors.New("NATS_TLS_CERT is set but NATS_TLS_KEY is not: set NATS_TLS_KEY to the client certificate's private key (PEM), or unset both"))
	case c.TLSKey != "" && c.TLSCert == "":
		errs = append(errs, errors.New("NATS_TLS_KEY is set but NATS_TLS_CERT is not: set NATS_TLS_CERT to the client certificate (PEM), or unset both"))
	}
	for _, f := range []struct{ name, path, what string }{
		{"NATS_CREDS", c.Creds, "the user's .creds file"},
		{"NATS_NKEY", c.NKey, "a file holding the user's nkey seed"},
		{"NATS_TLS_CA", c.TLSCA, "the PEM file of the CA that signed the server's certificate"},
		{"NATS_TLS_CERT", c.TLSCert, "the PEM client certificate"},
		{"NATS_TLS_KEY", c.TLSKey, "the PEM private key of the client certificate"},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w: set it to the path of %s", f.name, err, f.what))
		}
	}
	return errors.Join(errs...)
}

// secrets returns what must not appear in a log line or an error: the
// credentials in the URL and the token.
func (c NATSConfig) secrets() []string {
	return append(logging.URLSecrets(c.URL), c.Token.Reveal())
}

// authOptions returns the options that authenticate and secure the
// connection as c says. Credentials in the URL need none: the client reads
// them from there. Each option is tried once here so that a file that does
// not hold what it should is reported by its variable's name, before any
// connection attempt.
func (c NATSConfig) authOptions() ([]nats.Option, error) {
	type named struct {
		vars string
		opt  nats.Option
	}
	var opts []named
	if c.Creds != "" {
		opts = append(opts, named{"NATS_CREDS", nats.UserCredentials(c.Creds)})
	}
	if c.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY: read the nkey seed in %s: %w", c.NKey, err)
		}
		opts = append(opts, named{"NATS_NKEY", opt})
	}
	if c.Token != "" {
		opts = append(opts, named{"NATS_TOKEN", nats.Token(c.Token.Reveal())})
	}
	if c.TLSCA != "" {
		opts = append(opts, named{"NATS_TLS_CA", nats.RootCAs(c.TLSCA)})
	}
	if c.TLSCert != "" {
		opts = append(opts, named{"NATS_TLS_CERT and NATS_TLS_KEY", nats.ClientCert(c.TLSCert, c.TLSKey)})
	}
	out := make([]nats.Option, 0, len(opts))
	for _, o := range opts {
		scratch := nats.GetDefaultOptions()
		if err := o.opt(&scratch); err != nil {
			return nil, fmt.Errorf("%s: %w", o.vars, err)
		}
		out = append(out, o.opt)
	}
	return out, nil
}

// Connect opens a NATS connection named name that reconnects forever, and a
// JetStream context on it. It retries the first connection until
// cfg.ConnectTimeout so programs may start before the server, but gives up
// at once when the server refuses the credentials or the TLS handshake
// fails: waiting does not mend those. Connection state changes are logged
// on logger. Neither the log lines nor the error it returns hold a
// password or token.
func Connect(ctx context.Context, cfg NATSConfig, name string, logger *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
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
				logger.Warn("nats disconnected", "err", logging.Scrub(err, secrets...))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", logging.Scrub(err, secrets...)}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			logger.Warn("nats async error", attrs...)
		}),
	}, auth...)
	where := logging.RedactURLs(cfg.URL)
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
		err = logging.Scrub(err, secrets...)
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

// refusal tells what to fix when err says the server refused the
// credentials or the TLS handshake failed, and returns "" for errors that
// waiting may cure (server down, network).
func refusal(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		badCert   x509.CertificateInvalidError
		recordErr tls.RecordHeaderError
		verifyErr *tls.CertificateVerificationError
		opErr     *net.OpError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		errors.Is(err, nats.ErrAccountAuthExpired), errors.Is(err, nats.ErrNkeyAndUser), errors.Is(err, nats.ErrNoUserCB):
		return "the server refused the credentials: check the user and password or token in NATS_URL, or NATS_CREDS, NATS_NKEY or NATS_TOKEN"
	case errors.Is(err, nats.ErrSecureConnRequired):
		return "the server requires TLS: use a tls:// URL in NATS_URL, or set NATS_TLS_CA"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "the server does not offer TLS: use a nats:// URL and unset NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY"
	case errors.As(err, &unknownCA), errors.As(err, &badHost), errors.As(err, &badCert), errors.As(err, &verifyErr):
		return "the server's certificate is not trusted: set NATS_TLS_CA to the CA that signed it, and reach the server by a name the certificate holds"
	// crypto/tls reports an alert from the server as a "remote error"; with
	// TLS 1.3 a refused client certificate may instead show as the server
	// hanging up right after the handshake (nats.ErrTLS).
	case errors.As(err, &opErr) && opErr.Op == "remote error", errors.Is(err, nats.ErrTLS), errors.As(err, &recordErr):
		return "the TLS handshake failed: if the server verifies clients, set NATS_TLS_CERT and NATS_TLS_KEY to a certificate it trusts"
	}
	return ""
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
