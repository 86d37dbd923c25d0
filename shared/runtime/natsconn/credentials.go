package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/jetline/jetline/shared/runtime/secret"
)

// validateCredentials reports two ways of authenticating at once, half a
// client certificate and files that cannot be read. credsInURL says
// whether a URL of c.URL carries a user or a token.
func (c Config) validateCredentials(credsInURL bool) error {
	var errs []error
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
func (c Config) secrets() []string {
	return append(secret.URLSecrets(c.URL), c.Token.Reveal())
}

// authOptions returns the options that authenticate and secure the
// connection as c says. Credentials in the URL need none: the client reads
// them from there. Each option is tried once here so that a file that does
// not hold what it should is reported by its variable's name, before any
// connection attempt.
func (c Config) authOptions() ([]nats.Option, error) {
	type named struct {
		vars string
		opt  nats.Option
	}
	var opts []named
	if c.Creds != "" {
		if err := checkCreds(c.Creds); err != nil {
			return nil, fmt.Errorf("NATS_CREDS: %w: use the file `nsc generate creds` writes", err)
		}
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

// checkCreds checks that the file at path holds a user JWT and a user nkey
// seed. The NATS client reads it only when it connects, and would report a
// bad file as a failed connection.
func checkCreds(path string) error {
	contents, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	token, err := jwt.ParseDecoratedJWT(contents)
	if err == nil {
		_, err = jwt.DecodeUserClaims(token)
	}
	if err != nil {
		return fmt.Errorf("%s holds no user JWT (%v)", path, err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(contents)
	if err != nil {
		return fmt.Errorf("%s holds no user nkey seed (%v)", path, err)
	}
	kp.Wipe()
	return nil
}

// refusal tells what to fix when err says the server refused the
// credentials, the TLS handshake failed or the URL does not parse, and
// returns "" for errors that waiting may cure (server down, network).
func refusal(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		badCert   x509.CertificateInvalidError
		recordErr tls.RecordHeaderError
		verifyErr *tls.CertificateVerificationError
		opErr     *net.OpError
	)
	var urlErr *url.Error
	switch {
	case errors.As(err, &urlErr):
		return "NATS_URL does not parse: use e.g. nats://host:4222 or nats://user:password@host:4222, with special characters in the password percent-encoded"
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
