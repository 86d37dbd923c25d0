package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// tlsConfig returns the TLS listeners' configuration, or nil if there are
// none. Its errors name the variable to set or fix.
func (c Config) tlsConfig() (*tls.Config, error) {
	if strings.TrimSpace(c.TLSListen) == "" {
		var errs []error
		for _, v := range []struct{ name, value string }{
			{"GATEWAY_TLS_CERT", c.TLSCert}, {"GATEWAY_TLS_KEY", c.TLSKey}, {"GATEWAY_TLS_CLIENT_CA", c.TLSClientCA},
		} {
			// A certificate without a listener is most likely a listener
			// forgotten; serving plain text then would be a surprise.
			if v.value != "" {
				errs = append(errs, fmt.Errorf("%s is set but GATEWAY_TLS_LISTEN is empty: set GATEWAY_TLS_LISTEN (e.g. :4443) or unset %s", v.name, v.name))
			}
		}
		return nil, errors.Join(errs...)
	}
	var errs []error
	if c.TLSCert == "" || c.TLSKey == "" {
		errs = append(errs, errors.New("GATEWAY_TLS_LISTEN needs a certificate: set GATEWAY_TLS_CERT and GATEWAY_TLS_KEY to the PEM files of the server certificate and its private key"))
	}
	if c.TLSHandshakeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("GATEWAY_TLS_HANDSHAKE_TIMEOUT must be positive (got %s)", c.TLSHandshakeTimeout))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if curves, err := parseCurves(c.TLSCurves); err != nil {
		errs = append(errs, err)
	} else {
		cfg.CurvePreferences = curves
	}
	if c.TLSCert != "" && c.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("load the TLS certificate GATEWAY_TLS_CERT=%s with its key GATEWAY_TLS_KEY=%s: %w", c.TLSCert, c.TLSKey, err))
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if c.TLSClientCA != "" {
		pem, err := os.ReadFile(c.TLSClientCA)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("read the client CA bundle GATEWAY_TLS_CLIENT_CA: %w", err))
		case !pool.AppendCertsFromPEM(pem):
			errs = append(errs, fmt.Errorf("GATEWAY_TLS_CLIENT_CA=%s holds no PEM certificate: point it at the CA certificates that sign client certificates", c.TLSClientCA))
		}
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// curveNames are the key exchanges GATEWAY_TLS_CURVES may name.
var curveNames = map[string]tls.CurveID{
	"x25519mlkem768": tls.X25519MLKEM768,
	"x25519":         tls.X25519,
	"p256":           tls.CurveP256,
	"p384":           tls.CurveP384,
	"p521":           tls.CurveP521,
}

// parseCurves reads GATEWAY_TLS_CURVES; empty means Go's defaults (nil).
func parseCurves(s string) ([]tls.CurveID, error) {
	var out []tls.CurveID
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		id, ok := curveNames[strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(name))]
		if !ok {
			return nil, fmt.Errorf("GATEWAY_TLS_CURVES: %q is not a key exchange; use some of X25519MLKEM768, X25519, P256, P384, P521, or leave it empty for Go's defaults", name)
		}
		out = append(out, id)
	}
	return out, nil
}

// handshake runs the server side of conn's TLS handshake, giving up after
// the handshake timeout or when ctx is done. It runs in the connection's
// goroutine, so a slow client holds up no one else.
func (g *Gateway) handshake(ctx context.Context, conn *tls.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, g.handshakeTimeout)
	defer cancel()
	err := conn.HandshakeContext(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no TLS handshake within %s (GATEWAY_TLS_HANDSHAKE_TIMEOUT; is the client speaking TLS?)", g.handshakeTimeout)
	}
	return err
}

// logCertificate logs the TLS listeners' certificate at start, and warns
// if it is expired or expires within a week: clients would refuse it, and
// the gateway does not reload it.
func (g *Gateway) logCertificate() {
	if g.tls == nil || len(g.tls.Certificates) == 0 || g.tls.Certificates[0].Leaf == nil {
		return
	}
	leaf := g.tls.Certificates[0].Leaf
	attrs := []any{"subject", leaf.Subject.String(), "not_after", leaf.NotAfter, "mutual_tls", g.tls.ClientCAs != nil,
		"handshake_timeout", g.handshakeTimeout}
	switch left := time.Until(leaf.NotAfter); {
	case left <= 0:
		g.logger.Warn("the TLS certificate has expired; clients will refuse it: renew GATEWAY_TLS_CERT and restart", attrs...)
	case left < 7*24*time.Hour:
		g.logger.Warn("the TLS certificate expires within a week: renew GATEWAY_TLS_CERT and restart", attrs...)
	default:
		g.logger.Info("tls certificate", attrs...)
	}
}
