package topology_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// writeFile writes data to a new file named name in dir and returns its
// path; the file is readable by its owner only, as a key should be.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// nkeyUser makes a user nkey and returns its public key and the path of a
// file holding its seed.
func nkeyUser(t *testing.T, dir, name string) (public, seedFile string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return public, writeFile(t, dir, name, seed)
}

// operator is a NATS operator with one account, for servers in JWT mode.
type operator struct {
	public     string // the operator's public key, trusted by the server
	account    string // the account's public key
	accountJWT string // the account's JWT, signed by the operator
	accountKP  nkeys.KeyPair
}

func newOperator(t *testing.T) *operator {
	t.Helper()
	opKP, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	accKP, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	op := &operator{accountKP: accKP}
	if op.public, err = opKP.PublicKey(); err != nil {
		t.Fatal(err)
	}
	if op.account, err = accKP.PublicKey(); err != nil {
		t.Fatal(err)
	}
	if op.accountJWT, err = jwt.NewAccountClaims(op.account).Encode(opKP); err != nil {
		t.Fatal(err)
	}
	return op
}

// creds writes a .creds file for a new user of op's account, signed by
// signer (op's account key for a valid user) and returns its path.
func (op *operator) creds(t *testing.T, dir, name string, signer nkeys.KeyPair) string {
	t.Helper()
	userKP, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	userPub, err := userKP.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	userJWT, err := jwt.NewUserClaims(userPub).Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := userKP.Seed()
	if err != nil {
		t.Fatal(err)
	}
	file, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, name, file)
}

// certAuthority is a throw-away CA that signs server and client
// certificates, all ECDSA P-256.
type certAuthority struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string // the CA certificate, as NATS_TLS_CA takes it
	dir     string
}

// serial numbers the certificates a test binary makes.
var serial atomic.Int64

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newCA(t *testing.T, dir, name string) *certAuthority {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return &certAuthority{cert: cert, key: key, pemFile: pemFile, dir: dir}
}

// issue signs a certificate for 127.0.0.1 and localhost, usable by a server
// and a client, and returns it with the paths of its PEM files.
func (ca *certAuthority) issue(t *testing.T, name string) (cert tls.Certificate, certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, writeFile(t, ca.dir, name+".pem", certPEM), writeFile(t, ca.dir, name+"-key.pem", keyPEM)
}

// pool returns a pool trusting ca only.
func (ca *certAuthority) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}
