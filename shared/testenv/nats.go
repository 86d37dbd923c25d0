package testenv

import (
	"testing"

	"github.com/jetline/jetline/shared/embeddednats"
)

// NATS starts an embedded NATS JetStream server on a free loopback port
// with its store in a temporary directory, stopped when t ends. Every call
// gets its own server, so tests may run in parallel. It fails the test if the
// server cannot start: being a library, it has no reason to be missing.
func NATS(t testing.TB) *embeddednats.Server {
	t.Helper()
	srv, err := embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: t.TempDir()}, Logger(t))
	if err != nil {
		t.Fatalf("testenv: start embedded nats: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}
