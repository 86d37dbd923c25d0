package main

import (
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetline/jetline/shared/embeddednats"
	"github.com/jetline/jetline/shared/logging/secrettest"
	"github.com/jetline/jetline/shared/testenv"
)

// The secrets the gateway is given; none may ever be printed.
const (
	natsPassword = "gwNatsPassword7Q"
	natsToken    = "gwNatsToken9Z"
	wrongSecret  = "gwWrongSecret4K"
)

// TestRunMain is the gateway program in the child processes of
// TestSecretsNeverPrinted.
func TestRunMain(t *testing.T) { secrettest.Main(t, main) }

// closedAddr returns a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// authNATS starts a NATS server that takes user jet with natsPassword, or
// natsToken when token is set.
func authNATS(t *testing.T, token bool) *embeddednats.Server {
	t.Helper()
	configure := func(o *server.Options) {
		o.Users = []*server.User{{Username: "jet", Password: natsPassword}}
	}
	if token {
		configure = func(o *server.Options) { o.Authorization = natsToken }
	}
	srv, err := embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: t.TempDir(), Configure: configure}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// baseEnv is what every run gets: debug logs, so that every line the
// gateway may write is written.
func baseEnv(format string, more map[string]string) map[string]string {
	env := map[string]string{
		"GATEWAY_LISTEN":           "127.0.0.1:0",
		"GATEWAY_HEALTH_ADDR":      "off",
		"GATEWAY_SHUTDOWN_TIMEOUT": "5s",
		"NATS_CONNECT_TIMEOUT":     "1s",
		"LOG_LEVEL":                "debug",
		"LOG_FORMAT":               format,
	}
	for k, v := range more {
		env[k] = v
	}
	return env
}

// TestSecretsNeverPrinted runs the gateway with a password in NATS_URL or
// a NATS token through start-up, failures that put URLs in error messages,
// a NATS restart and shutdown, and checks that its output never holds them.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts the gateway in child processes")
	}
	wantFailure := func(t *testing.T, p *secrettest.Program, want string) {
		t.Helper()
		if err := p.Wait(t); err == nil {
			t.Fatalf("gateway exited with status 0, want a failure; output:\n%s", p.Output())
		}
		if !strings.Contains(p.Output(), want) {
			t.Fatalf("output does not say %q:\n%s", want, p.Output())
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, format string) *secrettest.Program
	}{
		{"unreachable with a password", func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format, map[string]string{
				"NATS_URL": "nats://jet:" + natsPassword + "@no-such-host.invalid:4222,nats://jet:" + natsPassword + "@" + closedAddr(t),
			}))
			wantFailure(t, p, "gateway: connect to nats at nats://jet:xxxxx@no-such-host.invalid:4222")
			return p
		}},
		{"unreachable with a token", func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format, map[string]string{
				"NATS_URL": "nats://" + closedAddr(t), "NATS_TOKEN": natsToken,
			}))
			wantFailure(t, p, "is the server running?")
			return p
		}},
		{"unreachable with a token in the url", func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format, map[string]string{
				"NATS_URL": "nats://" + natsToken + "@no-such-host.invalid:4222",
			}))
			wantFailure(t, p, "is the server running?")
			return p
		}},
		{"wrong password", func(t *testing.T, format string) *secrettest.Program {
			srv := authNATS(t, false)
			p := secrettest.Start(t, "TestRunMain", baseEnv(format, map[string]string{
				"NATS_URL": "nats://jet:" + wrongSecret + "@" + srv.Addr().String(),
			}))
			wantFailure(t, p, "the server refused the credentials")
			return p
		}},
		{"url that does not parse", func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format, map[string]string{
				"NATS_URL": "nats://jet:" + natsPassword + "@host:notaport",
			}))
			wantFailure(t, p, "invalid configuration")
			return p
		}},
		{"runs with a password", func(t *testing.T, format string) *secrettest.Program {
			srv := authNATS(t, false)
			p := secrettest.Start(t, "TestRunMain", baseEnv(format, map[string]string{
				"NATS_URL": "nats://jet:" + natsPassword + "@" + srv.Addr().String(),
			}))
			p.WaitFor(t, "gateway started")
			// A restart makes the client log a disconnection and a reconnection.
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			p.WaitFor(t, "nats reconnected")
			if err := p.Stop(t); err != nil {
				t.Fatalf("gateway exited with %v; output:\n%s", err, p.Output())
			}
			return p
		}},
		{"runs with a token", func(t *testing.T, format string) *secrettest.Program {
			srv := authNATS(t, true)
			p := secrettest.Start(t, "TestRunMain", baseEnv(format, map[string]string{
				"NATS_URL": "nats://" + srv.Addr().String(), "NATS_TOKEN": natsToken,
			}))
			p.WaitFor(t, "gateway started")
			if err := p.Stop(t); err != nil {
				t.Fatalf("gateway exited with %v; output:\n%s", err, p.Output())
			}
			return p
		}},
	}
	for _, format := range []string{"json", "text"} {
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				p := tt.run(t, format)
				out := p.Output()
				if !strings.Contains(out, "configuration") && !strings.Contains(out, "invalid configuration") {
					t.Errorf("no configuration line:\n%s", out)
				}
				secrettest.NoSecrets(t, out, natsPassword, natsToken, wrongSecret)
				if t.Failed() {
					t.Logf("output:\n%s", out)
				}
			})
		}
	}
}
