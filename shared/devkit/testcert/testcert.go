// Package testcert makes throw-away certificates for tests of TLS
// listeners and clients: a certificate authority and the certificates it
// signs, all ECDSA P-256, valid from an hour ago to an hour from now, with
// their PEM files in the test's temporary directories. Keys are made fresh
// in every run; none is checked in. [MakeCA] and [CA.IssueInto] do the same
// outside a test, into a directory and for a lifetime of the caller's.
//
//	ca := testcert.NewCA(t, "server-ca")
//	server := ca.Issue(t, "127.0.0.1")
//	// serve with server.TLS (or server.CertFile, server.KeyFile);
//	// clients trust ca.Pool() (or ca.File).
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that signs test certificates.
type CA struct {
	// Cert is the CA's own, self-signed certificate.
	Cert *x509.Certificate
	// Key signs the certificates [CA.Issue] makes.
	Key *ecdsa.PrivateKey
	// File is the path of a PEM file holding Cert, as a CA option
	// (GATEWAY_TLS_CLIENT_CA, NATS_TLS_CA, sslrootcert) takes it.
	File string

	validFor time.Duration // of the certificates it issues
}

// Pair is a certificate signed by a [CA] and its private key.
type Pair struct {
	// TLS is the certificate and key, ready for a [tls.Config].
	TLS tls.Certificate
	// CertFile and KeyFile are the paths of PEM files holding the
	// certificate and the PKCS #8 key; the key file is readable by its
	// owner only, as servers such as Postgres require.
	CertFile, KeyFile string
}

// NewCA makes a certificate authority with common name name and writes its
// certificate to a PEM file. It fails the test on any error.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := MakeCA(t.TempDir(), name, time.Hour)
	if err != nil {
		t.Fatalf("testcert: %v", err)
	}
	return ca
}

// MakeCA makes a certificate authority with common name name whose
// certificates, its own and those it issues, are valid from an hour ago
// until validFor from now, and writes its certificate into dir as
// name.pem.
func MakeCA(dir, name string, validFor time.Duration) (*CA, error) {
	ca := &CA{validFor: validFor}
	tmpl, err := ca.template(name)
	if err == nil {
		ca.Key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.Key.PublicKey, ca.Key)
	if err == nil {
		ca.Cert, err = x509.ParseCertificate(der)
	}
	if err == nil {
		ca.File, err = writePEM(dir, name+".pem", "CERTIFICATE", der)
	}
	if err != nil {
		return nil, fmt.Errorf("make CA %s: %w", name, err)
	}
	return ca, nil
}

// Pool returns a certificate pool that trusts ca only.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue signs a certificate with common name cn, for use by a server and by
// a client alike. It is valid for 127.0.0.1 and, when cn is a host name,
// for cn and localhost. When cn is an IP address the certificate names no
// host, so clients that check the common name and ignore IP addresses
// (ncat) accept it for cn. It fails the test on any error.
func (ca *CA) Issue(t testing.TB, cn string) Pair {
	t.Helper()
	p, err := ca.IssueInto(t.TempDir(), cn)
	if err != nil {
		t.Fatalf("testcert: %v", err)
	}
	return p
}

// IssueInto is [CA.Issue] writing the pair into dir, as cn.pem and
// cn-key.pem.
func (ca *CA) IssueInto(dir, cn string) (p Pair, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("issue a certificate for %s: %w", cn, err)
		}
	}()
	tmpl, err := ca.template(cn)
	if err != nil {
		return p, err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	if net.ParseIP(cn) == nil {
		// A client that finds a host name among the alternatives
		// checks those only, never the common name.
		tmpl.DNSNames = []string{cn, "localhost"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return p, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return p, err
	}
	p.CertFile, err = writePEM(dir, cn+".pem", "CERTIFICATE", der)
	if err == nil {
		p.KeyFile, err = writePEM(dir, cn+"-key.pem", "PRIVATE KEY", keyDER)
	}
	if err == nil {
		p.TLS, err = tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	}
	return p, err
}

// template is the part every certificate of ca shares. The serial is
// random, so no two certificates a client sees from one CA look alike.
func (ca *CA) template(cn string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(ca.validFor),
	}, nil
}

// writePEM writes one PEM block to a file named name in dir, readable by
// its owner only, and returns its path.
func writePEM(dir, name, kind string, der []byte) (string, error) {
	path := filepath.Join(dir, name)
	return path, errors.Join(os.MkdirAll(dir, 0o700), os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
}
