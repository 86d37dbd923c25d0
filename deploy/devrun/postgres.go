package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jetline/jetline/shared/privatepg"
)

// postgresStopTimeout bounds the private server's fast shutdown.
const postgresStopTimeout = 15 * time.Second

// startPostgres starts a private Postgres on 127.0.0.1:cfg.PostgresPort with
// its data in DataDir/postgres and database jetline, unless cfg.DatabaseURL
// names a database to use. It returns the URL for the workers and a function
// that stops the server (a no-op for an external one).
func startPostgres(ctx context.Context, cfg Config, logger *slog.Logger) (url string, stop func(context.Context) error, err error) {
	if cfg.DatabaseURL != "" {
		logger.Info("using the database in DATABASE_URL", slog.String("component", "privatepg"))
		return cfg.DatabaseURL, func(context.Context) error { return nil }, nil
	}
	dir := filepath.Join(cfg.DataDir, "postgres")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.PostgresPort))
	hint := fmt.Sprintf("stop that process, or set DATABASE_URL=postgres://USER@%s/jetline?sslmode=disable to use it, or JETLINE_POSTGRES_PORT to run the private one elsewhere", addr)
	if pid := leftoverPostmaster(dir); pid != 0 {
		hint = fmt.Sprintf("it is probably the postgres of an earlier run (pid %d, data %s): stop it with `kill -INT %d`", pid, dir, pid)
	}
	if err := checkPortFree(addr, "the private Postgres server", hint); err != nil {
		return "", nil, err
	}
	srv, err := privatepg.Start(ctx, privatepg.Options{
		Dir:      dir,
		Host:     "127.0.0.1",
		Port:     cfg.PostgresPort,
		Database: "jetline",
		User:     "postgres",
	}, logger)
	if err != nil {
		return "", nil, err // privatepg's errors say what to do.
	}
	return srv.URL(), func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, postgresStopTimeout)
		defer cancel()
		return srv.Stop(ctx)
	}, nil
}
