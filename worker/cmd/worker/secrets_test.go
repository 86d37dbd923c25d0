package main

import (
	"bytes"
	"net/url"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testcert"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/logging"
	"github.com/jetline/jetline/shared/runtime/secret"
	"github.com/jetline/jetline/shared/runtime/secret/secrettest"
	"github.com/jetline/jetline/worker"
)

// The secrets the worker is given; none may ever be printed.
const (
	secretNATSPassword = "wkNatsPassword7Q"
	secretNATSToken    = "wkNatsToken9Z"
	secretDBPassword   = "wkDbPassword3M"
)

// TestRunMain is the worker program in the child processes of
// TestSecretsNeverPrinted.
func TestRunMain(t *testing.T) { secrettest.Main(t, main) }

// withPassword returns the PostgreSQL URL dsn with secretDBPassword as its
// password. The test server trusts local connections and never asks for
// it, but the worker holds it all the same.
func withPassword(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), secretDBPassword)
	return u.String()
}

// secretsEnv is what every run gets: debug logs, so that every line the
// worker may write is written.
func secretsEnv(format string) map[string]string {
	return map[string]string{
		"WORKER_HEALTH_ADDR":      "off",
		"WORKER_INSTANCE":         "secrets",
		"WORKER_BATCH_BYTES":      "1048576",
		"WORKER_SHUTDOWN_TIMEOUT": "5s",
		"INGEST_MAX_BYTES":        "104857600",
		"NATS_CONNECT_TIMEOUT":    "1s",
		"LOG_LEVEL":               "debug",
		"LOG_FORMAT":              format,
	}
}

// TestSecretsNeverPrinted runs the worker with passwords in NATS_URL and
// DATABASE_URL, or a NATS token, through start-up, failures that put URLs
// in error messages (unknown hosts, closed ports, strings that do not
// parse), a NATS restart and shutdown, and checks that its output never
// holds them.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts the worker in child processes")
	}
	dbURL := withPassword(t, testenv.Postgres(t))
	natsURL := func(srv *embeddednats.Server) string {
		return "nats://jet:" + secretNATSPassword + "@" + srv.Addr().String()
	}
	secrettest.Runs(t, []secrettest.Run{
		{Name: "nats unreachable", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", secretsEnv(format), map[string]string{
				"NATS_URL":     "nats://jet:" + secretNATSPassword + "@no-such-host.invalid:4222",
				"DATABASE_URL": dbURL,
			})
			p.WantFailure(t, "worker: connect to nats at nats://jet:xxxxx@no-such-host.invalid:4222")
			return p
		}},
		{Name: "postgres port closed", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", secretsEnv(format), map[string]string{
				"NATS_URL":     natsURL(testenv.NATSWithPassword(t, "jet", secretNATSPassword)),
				"DATABASE_URL": "postgres://jet:" + secretDBPassword + "@" + testenv.FreeAddr(t) + "/jetline?sslmode=disable",
			})
			p.StopAfter(t, "waiting for postgres")
			return p
		}},
		{Name: "postgres host unknown", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", secretsEnv(format), map[string]string{
				"NATS_URL":     natsURL(testenv.NATSWithPassword(t, "jet", secretNATSPassword)),
				"DATABASE_URL": "postgres://jet@no-such-host.invalid/jetline?sslmode=disable&password=" + secretDBPassword,
			})
			p.StopAfter(t, "waiting for postgres")
			return p
		}},
		{Name: "database url that does not parse", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", secretsEnv(format), map[string]string{
				"NATS_URL":     natsURL(testenv.NATSWithPassword(t, "jet", secretNATSPassword)),
				"DATABASE_URL": "postgres://jet:" + secretDBPassword + "@127.0.0.1:notaport/jetline",
			})
			p.WantFailure(t, "DATABASE_URL is not a usable PostgreSQL connection string")
			return p
		}},
		{Name: "keyword/value string that does not parse", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", secretsEnv(format), map[string]string{
				"NATS_URL":     natsURL(testenv.NATSWithPassword(t, "jet", secretNATSPassword)),
				"DATABASE_URL": "host=127.0.0.1 password=" + secretDBPassword + " sslmode=bogus",
			})
			p.WantFailure(t, "DATABASE_URL is not a usable PostgreSQL connection string")
			return p
		}},
		{Name: "runs with passwords", Start: func(t *testing.T, format string) *secrettest.Program {
			srv := testenv.NATSWithPassword(t, "jet", secretNATSPassword)
			p := secrettest.Start(t, "TestRunMain", secretsEnv(format), map[string]string{
				"NATS_URL":     natsURL(srv),
				"DATABASE_URL": dbURL,
			})
			p.WaitFor(t, "worker started")
			// A restart makes the client log a disconnection and a reconnection.
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			p.StopAfter(t, "nats reconnected")
			return p
		}},
		{Name: "runs with a token", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", secretsEnv(format), map[string]string{
				"NATS_URL":     "nats://" + testenv.NATSWithToken(t, secretNATSToken).Addr().String(),
				"NATS_TOKEN":   secretNATSToken,
				"DATABASE_URL": dbURL,
			})
			p.StopAfter(t, "worker started")
			return p
		}},
	}, secretNATSPassword, secretNATSToken, secretDBPassword)
}

// TestDatabaseURLWithTLS gives the worker a DATABASE_URL with a password,
// sslmode=verify-full, a root certificate and a client certificate, and
// checks that the pool gets all of them, and that the configuration line
// shows the file paths but not the password.
func TestDatabaseURLWithTLS(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t, "db-ca")
	client := ca.Issue(t, "db.example.com")
	dsn := "postgres://jetline:" + secretDBPassword + "@db.example.com:5432/jetline?sslmode=verify-full" +
		"&sslrootcert=" + url.QueryEscape(ca.File) + "&sslcert=" + url.QueryEscape(client.CertFile) + "&sslkey=" + url.QueryEscape(client.KeyFile)
	var cfg worker.Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: map[string]string{"DATABASE_URL": dsn}}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	pool, err := openPool(t.Context(), cfg)
	if err != nil {
		t.Fatalf("openPool: %v", err)
	}
	defer pool.Close()
	cc := pool.Config().ConnConfig
	if cc.Password != secretDBPassword || cc.Host != "db.example.com" {
		t.Errorf("password or host not taken from DATABASE_URL: host %q", cc.Host)
	}
	tc := cc.TLSConfig
	if tc == nil {
		t.Fatal("sslmode=verify-full gave no TLS configuration")
	}
	if tc.ServerName != "db.example.com" || tc.RootCAs == nil || len(tc.Certificates) != 1 {
		t.Errorf("TLS configuration: server name %q, root CAs set %t, %d client certificates; want db.example.com, true, 1",
			tc.ServerName, tc.RootCAs != nil, len(tc.Certificates))
	}
	if len(cc.Fallbacks) != 0 {
		t.Errorf("verify-full must not fall back to plain connections: %d fallbacks", len(cc.Fallbacks))
	}

	var logs bytes.Buffer
	secret.LogConfig(logging.New(logging.Config{Format: "json"}, &logs), cfg)
	line := logs.String()
	if !strings.Contains(line, "postgres://jetline:xxxxx@db.example.com:5432/jetline?sslmode=verify-full&sslrootcert="+url.QueryEscape(ca.File)) {
		t.Errorf("configuration line does not show DATABASE_URL with its password hidden and its paths: %s", line)
	}
	secrettest.NoSecrets(t, line, secretDBPassword)
}
