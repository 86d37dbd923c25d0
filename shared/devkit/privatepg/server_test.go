package privatepg

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testLogger writes the package's log lines to the test log.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tempDir returns a fresh directory an unprivileged postgres user can pass
// through (t.TempDir is mode 0700, which it cannot when we are root).
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "privatepg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// skipWithoutBinaries skips (or, on CI, fails) when err says postgres is
// not installed; any other error fails the test.
func skipWithoutBinaries(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("unexpected error: %v", err)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("postgres is required on CI: %v", err)
	}
	t.Skipf("postgres not installed: %v", err)
}

// startServer starts a server and stops it when the test ends.
func startServer(t testing.TB, opts Options) *Server {
	t.Helper()
	srv, err := Start(t.Context(), opts, testLogger(t))
	if err != nil {
		skipWithoutBinaries(t, err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return srv
}

// connect opens a connection to url, closed when the test ends.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// countRows returns the number of rows in table t of the database at url.
func countRows(t testing.TB, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := filepath.Join(tempDir(t), "nested", "data")
	srv := startServer(t, Options{Dir: dir})

	if srv.Port() == 0 {
		t.Fatal("Port() = 0 after start with port 0")
	}
	if !strings.HasPrefix(srv.URL(), "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(srv.URL(), "/jetline?sslmode=disable") {
		t.Fatalf("URL() = %q", srv.URL())
	}
	if srv.LogPath() != dir+".log" {
		t.Fatalf("LogPath() = %q, want %q", srv.LogPath(), dir+".log")
	}

	conn := connect(t, srv.URL())
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "jetline" {
		t.Fatalf("current_database() = %q, %v; want jetline", db, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t SELECT generate_series(1, 3)"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	conn.Close(ctx)

	port := srv.Port()
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if srv.Port() != port {
		t.Fatalf("port changed across restart: %d -> %d", port, srv.Port())
	}
	if n := countRows(t, srv.URL()); n != 3 {
		t.Fatalf("after restart: %d rows, want 3", n)
	}

	// A crash: committed rows must survive crash recovery.
	if len(srv.Pids()) < 2 {
		t.Fatalf("found %v working in %s, want the postmaster and its helpers", srv.Pids(), srv.opts.Dir)
	}
	srv.Kill()
	if pids := srv.Pids(); len(pids) > 0 {
		t.Fatalf("processes %v still alive after Kill", pids)
	}
	srv.Kill() // No-op on a killed server.
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("restart after kill: %v", err)
	}
	if n := countRows(t, srv.URL()); n != 3 {
		t.Fatalf("after kill and restart: %d rows, want 3", n)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = srv.CreateDatabase(ctx, "other db") })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent CreateDatabase: %v", err)
	}
	if err := srv.CreateDatabase(ctx, "other db"); err != nil {
		t.Fatalf("CreateDatabase on existing database: %v", err)
	}
	conn = connect(t, srv.URLFor("other db"))
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "other db" {
		t.Fatalf("current_database() = %q, %v; want %q", db, err, "other db")
	}
	conn.Close(ctx)

	// A second server on a directory in use must fail without disturbing
	// the first.
	if other, err := Start(ctx, Options{Dir: dir}, testLogger(t)); err == nil {
		other.Stop(ctx)
		t.Fatal("second server started on a data directory in use")
	} else if !strings.Contains(err.Error(), "postmaster.pid") {
		t.Fatalf("second server on a data directory in use: %v; want the lock file named", err)
	}
	if n := countRows(t, srv.URL()); n != 3 {
		t.Fatalf("after a second server was refused: %d rows, want 3", n)
	}

	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if pids := srv.Pids(); len(pids) > 0 {
		t.Fatalf("processes %v still alive after Stop", pids)
	}
	if c, err := pgx.Connect(ctx, srv.URL()); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}

	// A second Start on the same directory reuses the cluster.
	again := startServer(t, Options{Dir: dir})
	if n := countRows(t, again.URL()); n != 3 {
		t.Fatalf("after second start: %d rows, want 3", n)
	}
	log, err := os.ReadFile(again.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(log), logMarker+" initdb"); got != 1 {
		t.Fatalf("log shows %d initdb runs, want 1:\n%s", got, log)
	}
}

func TestStartSettings(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Options{
		Dir:      filepath.Join(tempDir(t), "data"),
		Database: "custom",
		Settings: map[string]string{"fsync": "off", "max_connections": "50"},
	})
	conn := connect(t, srv.URL())
	for _, tt := range []struct{ name, want string }{
		{"fsync", "off"},
		{"max_connections", "50"},
		{"shared_buffers", "128MB"},
		{"unix_socket_directories", ""},
		{"listen_addresses", "127.0.0.1"},
	} {
		var got string
		if err := conn.QueryRow(t.Context(), "SELECT current_setting($1)", tt.name).Scan(&got); err != nil {
			t.Fatalf("show %s: %v", tt.name, err)
		}
		if got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    func(t *testing.T) Options
		rootly  bool // only meaningful when running as root
		wantErr error
		want    []string
	}{
		{
			name: "missing binaries",
			opts: func(t *testing.T) Options {
				return Options{Dir: filepath.Join(t.TempDir(), "data"), BinDir: t.TempDir()}
			},
			wantErr: ErrNoBinaries,
			want:    []string{"apt-get install postgresql-15", EnvBinDir, "no executable initdb"},
		},
		{
			name: "unreachable directory",
			opts: func(t *testing.T) Options {
				// t.TempDir is mode 0700 and owned by root.
				return Options{Dir: filepath.Join(t.TempDir(), "data")}
			},
			rootly:  true,
			wantErr: ErrDirNotReachable,
			want:    []string{"chmod o+x", "/tmp"},
		},
		{
			name: "port setting",
			opts: func(t *testing.T) Options {
				return Options{Dir: t.TempDir(), Settings: map[string]string{"port": "1"}}
			},
			want: []string{"use Port"},
		},
		{
			name: "no dir",
			opts: func(*testing.T) Options { return Options{} },
			want: []string{"Dir is empty"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.rootly && os.Geteuid() != 0 {
				t.Skip("only root runs postgres as another user")
			}
			srv, err := Start(t.Context(), tt.opts(t), testLogger(t))
			if err == nil {
				srv.Stop(context.Background())
				t.Fatal("Start succeeded")
			}
			t.Logf("error: %v", err)
			if tt.wantErr != ErrNoBinaries && errors.Is(err, ErrNoBinaries) {
				skipWithoutBinaries(t, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDSN(t *testing.T) {
	t.Parallel()
	tests := []struct {
		user, host string
		port       int
		db, want   string
	}{
		{"postgres", "127.0.0.1", 5432, "jetline", "postgres://postgres@127.0.0.1:5432/jetline?sslmode=disable"},
		{"postgres", "::1", 6000, "jetline", "postgres://postgres@[::1]:6000/jetline?sslmode=disable"},
		{"a b", "localhost", 1, "my db", "postgres://a%20b@localhost:1/my%20db?sslmode=disable"},
	}
	for _, tt := range tests {
		got := dsn(tt.user, tt.host, tt.port, tt.db)
		if got != tt.want {
			t.Errorf("dsn(%q, %q, %d, %q) = %q, want %q", tt.user, tt.host, tt.port, tt.db, got, tt.want)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil {
			t.Fatalf("parse %q: %v", got, err)
		}
		if cfg.User != tt.user || cfg.Database != tt.db || int(cfg.Port) != tt.port {
			t.Errorf("parse %q: user %q db %q port %d", got, cfg.User, cfg.Database, cfg.Port)
		}
	}
}
