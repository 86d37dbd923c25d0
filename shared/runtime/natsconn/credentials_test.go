package natsconn_test

import (
	"os"
	"path/filepath"
	"testing"

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
