package testcert_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"

	"github.com/jetline/jetline/shared/devkit/testcert"
)

func TestIssue(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "ca")
	other := testcert.NewCA(t, "other-ca")

	for cn, hosts := range map[string][]string{
		"127.0.0.1":      {"127.0.0.1"},
		"db.example.com": {"127.0.0.1", "localhost", "db.example.com"},
	} {
		p := ca.Issue(t, cn)
		leaf, err := x509.ParseCertificate(p.TLS.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if net.ParseIP(cn) != nil && len(leaf.DNSNames) != 0 {
			t.Errorf("%s: certificate names hosts %v; want none, so that clients check the common name", cn, leaf.DNSNames)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			for _, host := range hosts {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("%s: verify for %s, usage %v: %v", cn, host, usage, err)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err == nil {
				t.Errorf("%s: another CA's pool trusts the certificate", cn)
			}
		}
		if _, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile); err != nil {
			t.Errorf("%s: files do not load as a pair: %v", cn, err)
		}
		fi, err := os.Stat(p.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: key file mode %v, want 0600", cn, perm)
		}
	}
}

func TestCAFile(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "ca")
	data, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("%s holds no PEM certificate", ca.File)
	}
	if !pool.Equal(ca.Pool()) {
		t.Fatalf("%s does not hold the CA certificate", ca.File)
	}
	if !ca.Cert.IsCA {
		t.Fatal("CA certificate is not marked as a CA")
	}
}
