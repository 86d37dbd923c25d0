package natsconn_test

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testcert"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/natsconn"
	"github.com/jetline/jetline/shared/runtime/secret"
)

// startNATS starts an embedded server that configure makes demand
// credentials or TLS, and returns its host:port.
func startNATS(t *testing.T, configure func(*server.Options)) string {
	t.Helper()
	return testenv.NATSWith(t, embeddednats.Options{Configure: configure}).Addr().String()
}

// TestConnectCredentials connects to servers that require a password, a
// token, an nkey, a JWT (.creds) or a client certificate, with the right
// credentials and with wrong ones. A refusal must end the attempt at once
// with an error that says what to check, and quote no secret.
func TestConnectCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	nkeyPub, nkeySeed := nkeyUser(t, dir, "user.nk")
	_, otherSeed := nkeyUser(t, dir, "other.nk")
	op := newOperator(t)
	goodCreds := op.creds(t, dir, "user.creds", op.accountKP)
	strangerAccount, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	badCreds := op.creds(t, dir, "stranger.creds", strangerAccount)
	ca := testcert.NewCA(t, "ca")
	serverCert := ca.Issue(t, "server").TLS
	client := ca.Issue(t, "client")
	otherCA := testcert.NewCA(t, "other-ca")
	stranger := otherCA.Issue(t, "stranger")

	servers := map[string]func(*server.Options){
		"password": func(o *server.Options) {
			o.Users = []*server.User{{Username: "jet", Password: "right-password"}}
		},
		"token": func(o *server.Options) { o.Authorization = "right-token" },
		"nkey":  func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: nkeyPub}} },
		"jwt": func(o *server.Options) {
			resolver := &server.MemAccResolver{}
			if err := resolver.Store(op.account, op.accountJWT); err != nil {
				t.Error(err)
			}
			o.TrustedKeys = []string{op.public}
			o.AccountResolver = resolver
			// JetStream in operator mode wants a system account too;
			// connecting needs neither.
			o.JetStream = false
		},
		"mtls": func(o *server.Options) {
			o.TLSConfig = &tls.Config{
				Certificates: []tls.Certificate{serverCert},
				ClientCAs:    ca.Pool(),
				ClientAuth:   tls.RequireAndVerifyClientCert,
				MinVersion:   tls.VersionTLS12,
			}
			o.TLS, o.TLSVerify, o.TLSTimeout = true, true, 5
		},
	}
	addrs := map[string]string{}
	for name, configure := range servers {
		addrs[name] = startNATS(t, configure)
	}

	const refused = "the server refused the credentials"
	tests := []struct {
		name, server string
		cfg          func(addr string) natsconn.Config
		want         string // "" for a connection, else part of the error
		secret       string // must not be in the error
	}{
		{"password in url", "password", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://jet:right-password@" + a}
		}, "", ""},
		{"escaped password in url", "password", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://jet:right%2Dpassword@" + a}
		}, "", ""},
		{"wrong password in url", "password", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://jet:wrong-password@" + a}
		}, refused, "wrong-password"},
		{"no password", "password", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a}
		}, refused, ""},
		{"token", "token", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a, Token: "right-token"}
		}, "", ""},
		{"token in url", "token", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://right-token@" + a}
		}, "", ""},
		{"wrong token", "token", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a, Token: "wrong-token"}
		}, refused, "wrong-token"},
		{"wrong token in url", "token", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://wrong-token@" + a}
		}, refused, "wrong-token"},
		{"nkey", "nkey", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a, NKey: nkeySeed}
		}, "", ""},
		{"unknown nkey", "nkey", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a, NKey: otherSeed}
		}, refused, ""},
		{"creds", "jwt", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a, Creds: goodCreds}
		}, "", ""},
		{"creds of an unknown account", "jwt", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a, Creds: badCreds}
		}, refused, ""},
		{"client certificate", "mtls", func(a string) natsconn.Config {
			return natsconn.Config{URL: "tls://" + a, TLSCA: ca.File, TLSCert: client.CertFile, TLSKey: client.KeyFile}
		}, "", ""},
		{"tls files with a nats url", "mtls", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a, TLSCA: ca.File, TLSCert: client.CertFile, TLSKey: client.KeyFile}
		}, "", ""},
		{"no client certificate", "mtls", func(a string) natsconn.Config {
			return natsconn.Config{URL: "tls://" + a, TLSCA: ca.File}
		}, "NATS_TLS_CERT and NATS_TLS_KEY", ""},
		{"client certificate of another ca", "mtls", func(a string) natsconn.Config {
			return natsconn.Config{URL: "tls://" + a, TLSCA: ca.File, TLSCert: stranger.CertFile, TLSKey: stranger.KeyFile}
		}, "NATS_TLS_CERT and NATS_TLS_KEY", ""},
		{"server certificate of an untrusted ca", "mtls", func(a string) natsconn.Config {
			return natsconn.Config{URL: "tls://" + a, TLSCA: otherCA.File, TLSCert: client.CertFile, TLSKey: client.KeyFile}
		}, "set NATS_TLS_CA to the CA that signed it", ""},
		{"no tls settings", "mtls", func(a string) natsconn.Config {
			return natsconn.Config{URL: "nats://" + a}
		}, "NATS_TLS_CA", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg(addrs[tt.server])
			// Long enough to outlast a retry: a refusal must not wait for it.
			cfg.ConnectTimeout = 3 * time.Second
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			nc, _, err := natsconn.Connect(t.Context(), cfg, "test", logger)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Connect: %v", err)
				}
				defer nc.Close()
				if !nc.IsConnected() {
					t.Fatalf("connection is %s", nc.Status())
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded, want a refusal")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not say %q: %v", tt.want, err)
			}
			if strings.Contains(logs.String(), "waiting for nats") {
				t.Errorf("Connect retried a refusal: %s", logs.String())
			}
			if tt.secret != "" && (strings.Contains(err.Error(), tt.secret) || strings.Contains(logs.String(), tt.secret)) {
				t.Errorf("the secret %q leaked:\nerr: %v\nlogs: %s", tt.secret, err, logs.String())
			}
		})
	}
}

// TestConnectBadURLHidesSecrets gives Connect, unvalidated, a URL that does
// not parse: url.Parse quotes it whole in its error.
func TestConnectBadURLHidesSecrets(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	cfg := natsconn.Config{URL: "nats://jet:pw-unparsed@host:notaport", ConnectTimeout: 3 * time.Second}
	_, _, err := natsconn.Connect(t.Context(), cfg, "test", slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil || !strings.Contains(err.Error(), "NATS_URL does not parse") {
		t.Fatalf("Connect with a URL that does not parse: %v", err)
	}
	if strings.Contains(logs.String(), "waiting for nats") {
		t.Errorf("Connect retried a URL that does not parse: %s", logs.String())
	}
	if strings.Contains(err.Error()+logs.String(), "pw-unparsed") {
		t.Errorf("the password leaked:\nerr: %v\nlogs: %s", err, logs.String())
	}
}

// TestConnectUnreachableHidesSecrets waits for a server that is not there,
// with a password in the URL and a token, and checks that neither the log
// lines nor the final error quote them.
func TestConnectUnreachableHidesSecrets(t *testing.T) {
	t.Parallel()
	for _, cfg := range []natsconn.Config{
		{URL: "nats://jet:pw-unreachable@no-such-host.invalid:4222,nats://jet:pw-unreachable@127.0.0.1:1"},
		{URL: "nats://tok-unreachable@127.0.0.1:1"},
		{URL: "nats://127.0.0.1:1", Token: "tok-unreachable"},
	} {
		cfg.ConnectTimeout = 300 * time.Millisecond
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		_, _, err := natsconn.Connect(t.Context(), cfg, "test", logger)
		if err == nil {
			t.Fatalf("Connect(%s) succeeded", secret.RedactURLs(cfg.URL))
		}
		if !strings.Contains(err.Error(), "is the server running?") || !strings.Contains(logs.String(), "waiting for nats") {
			t.Errorf("unreachable server not retried and reported as such:\nerr: %v\nlogs: %s", err, logs.String())
		}
		for _, out := range []string{err.Error(), logs.String()} {
			if strings.Contains(out, "-unreachable") {
				t.Errorf("a secret leaked: %s", out)
			}
		}
	}
}

func TestNATSConfigValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, seed := nkeyUser(t, dir, "user.nk")
	tests := []struct {
		name string
		env  map[string]string
		want []string // parts of the error; none for a valid config
	}{
		{"defaults", nil, nil},
		{"password in url", map[string]string{"NATS_URL": "nats://jet:pw@a:4222,nats://jet:pw@b:4222"}, nil},
		{"host without scheme", map[string]string{"NATS_URL": "a:4222"}, nil},
		{"nkey and tls", map[string]string{"NATS_NKEY": seed, "NATS_TLS_CA": seed}, nil},
		{"empty url", map[string]string{"NATS_URL": " "}, []string{"NATS_URL is empty"}},
		{"bad port hides the password", map[string]string{"NATS_URL": "nats://jet:hidden-pw@host:notaport"},
			[]string{"NATS_URL entry nats://jet:xxxxx@host:notaport is not a URL", "percent-encoded"}},
		{"zero timeout", map[string]string{"NATS_CONNECT_TIMEOUT": "0s"}, []string{"NATS_CONNECT_TIMEOUT must be positive"}},
		{"cert without key", map[string]string{"NATS_TLS_CERT": seed}, []string{"NATS_TLS_CERT is set but NATS_TLS_KEY is not"}},
		{"key without cert", map[string]string{"NATS_TLS_KEY": seed}, []string{"NATS_TLS_KEY is set but NATS_TLS_CERT is not"}},
		{"token and url password", map[string]string{"NATS_URL": "nats://jet:pw@a:4222", "NATS_TOKEN": "hidden-token"},
			[]string{"credentials in NATS_URL and NATS_TOKEN are all set", "one way of authenticating"}},
		{"creds and nkey", map[string]string{"NATS_CREDS": seed, "NATS_NKEY": seed}, []string{"NATS_CREDS and NATS_NKEY are all set"}},
		{"missing files", map[string]string{"NATS_CREDS": dir + "/none.creds", "NATS_TLS_CA": dir + "/none.pem"},
			[]string{"NATS_CREDS: stat " + dir + "/none.creds: no such file or directory: set it to the path of the user's .creds file", "NATS_TLS_CA: stat"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var cfg natsconn.Config
			if err := env.ParseWithOptions(&cfg, env.Options{Environment: tt.env}); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate passed, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			if strings.Contains(err.Error(), "hidden-") {
				t.Errorf("error quotes a secret: %v", err)
			}
		})
	}
}

// TestConnectRejectsUnusableFiles names the variable whose file does not
// hold what it should, before connecting.
func TestConnectRejectsUnusableFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := writeFile(t, dir, "junk", []byte("not a key\n"))
	_, seed := nkeyUser(t, dir, "user.nk") // a seed without its JWT
	for _, tt := range []struct {
		cfg  natsconn.Config
		want string
	}{
		{natsconn.Config{NKey: junk}, "NATS_NKEY"},
		{natsconn.Config{Creds: junk}, "NATS_CREDS"},
		{natsconn.Config{Creds: seed}, "NATS_CREDS"},
		{natsconn.Config{TLSCA: junk}, "NATS_TLS_CA"},
		{natsconn.Config{TLSCert: junk, TLSKey: junk}, "NATS_TLS_CERT and NATS_TLS_KEY"},
	} {
		tt.cfg.URL, tt.cfg.ConnectTimeout = "nats://127.0.0.1:1", time.Second
		_, _, err := natsconn.Connect(t.Context(), tt.cfg, "test", slog.New(slog.DiscardHandler))
		if err == nil || !strings.HasPrefix(err.Error(), tt.want+":") {
			t.Errorf("Connect with a junk %s file: %v", tt.want, err)
		}
	}
}
