package main

import (
	"testing"

	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/secret/secrettest"
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

// baseEnv is what every run gets: debug logs, so that every line the
// gateway may write is written.
func baseEnv(format string) map[string]string {
	return map[string]string{
		"GATEWAY_LISTEN":           "127.0.0.1:0",
		"GATEWAY_HEALTH_ADDR":      "off",
		"GATEWAY_SHUTDOWN_TIMEOUT": "5s",
		"NATS_CONNECT_TIMEOUT":     "1s",
		"LOG_LEVEL":                "debug",
		"LOG_FORMAT":               format,
	}
}

// TestSecretsNeverPrinted runs the gateway with a password in NATS_URL or
// a NATS token through start-up, failures that put URLs in error messages,
// a NATS restart and shutdown, and checks that its output never holds them.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts the gateway in child processes")
	}
	secrettest.Runs(t, []secrettest.Run{
		{Name: "unreachable with a password", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format), map[string]string{
				"NATS_URL": "nats://jet:" + natsPassword + "@no-such-host.invalid:4222,nats://jet:" + natsPassword + "@" + testenv.FreeAddr(t),
			})
			p.WantFailure(t, "gateway: connect to nats at nats://jet:xxxxx@no-such-host.invalid:4222")
			return p
		}},
		{Name: "unreachable with a token", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format), map[string]string{
				"NATS_URL": "nats://" + testenv.FreeAddr(t), "NATS_TOKEN": natsToken,
			})
			p.WantFailure(t, "is the server running?")
			return p
		}},
		{Name: "unreachable with a token in the url", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format), map[string]string{
				"NATS_URL": "nats://" + natsToken + "@no-such-host.invalid:4222",
			})
			p.WantFailure(t, "is the server running?")
			return p
		}},
		{Name: "wrong password", Start: func(t *testing.T, format string) *secrettest.Program {
			srv := testenv.NATSWithPassword(t, "jet", natsPassword)
			p := secrettest.Start(t, "TestRunMain", baseEnv(format), map[string]string{
				"NATS_URL": "nats://jet:" + wrongSecret + "@" + srv.Addr().String(),
			})
			p.WantFailure(t, "the server refused the credentials")
			return p
		}},
		{Name: "url that does not parse", Start: func(t *testing.T, format string) *secrettest.Program {
			p := secrettest.Start(t, "TestRunMain", baseEnv(format), map[string]string{
				"NATS_URL": "nats://jet:" + natsPassword + "@host:notaport",
			})
			p.WantFailure(t, "invalid configuration")
			return p
		}},
		{Name: "runs with a password", Start: func(t *testing.T, format string) *secrettest.Program {
			srv := testenv.NATSWithPassword(t, "jet", natsPassword)
			p := secrettest.Start(t, "TestRunMain", baseEnv(format), map[string]string{
				"NATS_URL": "nats://jet:" + natsPassword + "@" + srv.Addr().String(),
			})
			p.WaitFor(t, "gateway started")
			// A restart makes the client log a disconnection and a reconnection.
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			p.StopAfter(t, "nats reconnected")
			return p
		}},
		{Name: "runs with a token", Start: func(t *testing.T, format string) *secrettest.Program {
			srv := testenv.NATSWithToken(t, natsToken)
			p := secrettest.Start(t, "TestRunMain", baseEnv(format), map[string]string{
				"NATS_URL": "nats://" + srv.Addr().String(), "NATS_TOKEN": natsToken,
			})
			p.StopAfter(t, "gateway started")
			return p
		}},
	}, natsPassword, natsToken, wrongSecret)
}
