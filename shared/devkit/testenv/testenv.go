// Package testenv provides the real servers and the logger that tests of
// every jetline package use.
//
// A package whose tests call [Postgres] must hand its TestMain to [Main],
// so the shared server is stopped and its files removed when the tests end:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// Without it the server still dies with the test binary (see package
// privatepg), but its temporary directory is left behind.
package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/privatepg"
)

// shared is the Postgres server of this test binary, started by the first
// call to Postgres.
var shared struct {
	once sync.Once
	srv  *privatepg.Server
	dir  string
	err  error
}

// dbSeq numbers the databases handed out by Postgres.
var dbSeq atomic.Int64

// Postgres returns the DSN of a new, empty database on the Postgres server
// shared by the whole test binary. The server is started on first use, on a
// free port, with its data in a temporary directory; it needs the
// PostgreSQL 15 binaries (see [privatepg.Start]). When it cannot start,
// Postgres fails the test if $CI is "true" and skips it otherwise. The
// database is never dropped: the server is thrown away by [Main]. Safe for
// concurrent use, including from parallel tests.
func Postgres(t testing.TB) string {
	t.Helper()
	srv, err := sharedPostgres()
	if err != nil {
		unavailable(t, err)
	}
	name := databaseName(t.Name(), dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.CreateDatabase(ctx, name); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return srv.URLFor(name)
}

// Main runs the tests, stops the shared Postgres server and removes its
// files, and exits with the tests' status. Call it from TestMain.
//
// When tests were skipped because Postgres could not start (outside CI),
// Main prints one line per reason, with the package and the number of
// tests, where plain `go test ./...` shows it (see [loudOutput]): a run
// that skipped its integration tests does not pass silently.
//
// cleanups run after the tests and before the shared server stops, for
// what TestMain itself set up (built binaries, say): Main never returns.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	reportSkips()
	for _, c := range cleanups {
		c()
	}
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
	}
	os.Exit(code)
}

// sharedPostgres starts the shared server once and returns it.
func sharedPostgres() (*privatepg.Server, error) {
	shared.once.Do(func() {
		shared.srv, shared.dir, shared.err = startShared()
	})
	return shared.srv, shared.err
}

// startShared starts a server in a fresh temporary directory. The directory
// is made searchable by others because, when tests run as root, postgres
// runs as an unprivileged user that must reach the data directory inside.
func startShared() (*privatepg.Server, string, error) {
	dir, err := os.MkdirTemp("", "jetline-testenv-pg-")
	if err != nil {
		return nil, "", fmt.Errorf("create postgres directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, "", fmt.Errorf("make postgres directory searchable: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The server outlives the test that starts it, so it cannot log to
	// that test.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	srv, err := privatepg.Start(ctx, privatepg.Options{Dir: filepath.Join(dir, "data")}, logger)
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	return srv, dir, nil
}

// stopShared stops the shared server, if it was started, and removes its
// directory.
func stopShared() error {
	if shared.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := shared.srv.Stop(ctx)
	if rmErr := os.RemoveAll(shared.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("remove postgres directory: %w", rmErr)
	}
	return err
}

// unavailable fails the test on CI and skips it elsewhere, counting the
// skip for [Main] to report.
func unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("testenv: postgres is required when CI=true: %v", err)
	}
	skip(t, fmt.Sprintf("postgres unavailable: %v", err))
}

// unsafeChars matches what may not appear in an unquoted identifier.
var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// databaseName derives a readable, unique database name from the test name
// and a sequence number, within Postgres's 63-byte identifier limit.
func databaseName(test string, seq int64) string {
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(test), "_"), "_")
	suffix := fmt.Sprintf("_%d", seq)
	base = base[:min(len(base), 63-len("t_")-len(suffix))]
	return "t_" + base + suffix
}
