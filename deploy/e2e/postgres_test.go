package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/privatepg"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// ownPostgres starts a Postgres server for t alone, stopped and removed
// when t ends. A test that stops or kills its database needs one: the
// server from testenv.Postgres serves every test of the binary at once.
// Without the PostgreSQL binaries it skips t, or fails it when CI=true,
// as testenv.Postgres does.
func ownPostgres(t *testing.T) *privatepg.Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "jetline-e2e-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Run as root, postgres runs as an unprivileged user that must reach
	// the data directory inside.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// fsync=off: the test kills nothing but the programs under test, and
	// initdb and every commit are much faster without it.
	srv, err := privatepg.Start(ctx, privatepg.Options{
		Dir:      filepath.Join(dir, "data"),
		Settings: map[string]string{"fsync": "off"},
	}, testenv.Logger(t))
	if err != nil {
		if errors.Is(err, privatepg.ErrNoBinaries) && os.Getenv("CI") != "true" {
			t.Skipf("postgres unavailable, skipping (set CI=true to fail instead): %v", err)
		}
		t.Fatalf("start a postgres of the test's own: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	})
	return srv
}
