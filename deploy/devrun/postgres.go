package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jetline/jetline/shared/devkit/childproc"
	"github.com/jetline/jetline/shared/devkit/privatepg"
)

// postgresStopTimeout bounds the private server's fast shutdown.
const postgresStopTimeout = 15 * time.Second

// startPostgres starts a private Postgres on 127.0.0.1:cfg.PostgresPort with
// its data in DataDir/postgres and database jetline, unless cfg.DatabaseURL
// names a database to use. It returns the URL for the workers and the
// server, nil for an external one.
func startPostgres(ctx context.Context, cfg Config, logger *slog.Logger) (url string, srv *privatepg.Server, err error) {
	if cfg.DatabaseURL != "" {
		logger.Info("using the database in DATABASE_URL", slog.String("component", "privatepg"))
		return cfg.DatabaseURL, nil, nil
	}
	dir := postgresDir(cfg)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.PostgresPort))
	hint := fmt.Sprintf("stop that process, or set DATABASE_URL=postgres://USER@%s/jetline?sslmode=disable to use it, or JETLINE_POSTGRES_PORT to run the private one elsewhere", addr)
	if pid := leftoverPostmaster(dir); pid != 0 {
		hint = fmt.Sprintf("it is probably the postgres of an earlier run (pid %d, data %s): stop it with `kill -INT %d`", pid, dir, pid)
	}
	if err := checkPortFree(addr, "the private Postgres server", hint); err != nil {
		return "", nil, err
	}
	srv, err = privatepg.Start(ctx, privatepg.Options{
		Dir:      dir,
		Host:     "127.0.0.1",
		Port:     cfg.PostgresPort,
		Database: "jetline",
		User:     "postgres",
	}, logger)
	if err != nil {
		return "", nil, err // privatepg's errors say what to do.
	}
	return srv.URL(), srv, nil
}

// postgresDir is the private server's data directory.
func postgresDir(cfg Config) string { return filepath.Join(cfg.DataDir, "postgres") }

// postgresService returns the running private server srv, with its data in
// dir, as a service: a run is its postmaster ([privatepg.Server.Process]),
// the next run is [privatepg.Server.Restart] on the same data and port
// (crash recovery included), and stopping is [privatepg.Server.Stop], a
// fast shutdown. The server writes its own log, srv.LogPath().
func postgresService(srv *privatepg.Server, dir string) service {
	first := true
	return service{
		name:        "postgres",
		stopTimeout: postgresStopTimeout,
		describe:    []any{slog.String("dir", dir)},
		logPath:     srv.LogPath(),
		start: func(ctx context.Context) (instance, error) {
			if !first {
				if err := srv.Restart(ctx); err != nil {
					return nil, err
				}
			}
			first = false
			proc := srv.Process()
			if proc == nil {
				return nil, fmt.Errorf("no postmaster runs on %s (see %s)", dir, srv.LogPath())
			}
			return postgresRun{proc, srv}, nil
		},
	}
}

// postgresRun is one run of the private server, an [instance]: its
// postmaster, stopped through the server.
type postgresRun struct {
	*childproc.Process
	srv *privatepg.Server
}

// Terminate stops the server with a fast shutdown, killing it after timeout
// or once ctx is done.
func (r postgresRun) Terminate(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return r.srv.Stop(ctx)
}
