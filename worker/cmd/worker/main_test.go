package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/embeddednats"
	"github.com/jetline/jetline/shared/testenv"
	"github.com/jetline/jetline/shared/topology"
	"github.com/jetline/jetline/worker"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// freeAddr returns a local address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// setup starts NATS and returns a config for run pointing at it and at
// databaseURL.
func setup(t *testing.T, databaseURL string) worker.Config {
	t.Helper()
	srv, err := embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: t.TempDir()}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	var cfg worker.Config
	err = env.ParseWithOptions(&cfg, env.Options{Environment: map[string]string{
		"DATABASE_URL":            databaseURL,
		"NATS_URL":                srv.ClientURL(),
		"WORKER_HEALTH_ADDR":      freeAddr(t),
		"WORKER_FETCH_MAX_WAIT":   "100ms",
		"WORKER_SHUTDOWN_TIMEOUT": "5s",
		"WORKER_INSTANCE":         "test",
		"INGEST_MAX_BYTES":        "104857600",
		"LOG_LEVEL":               "warn",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// start runs the program until the returned stop is called.
func start(t *testing.T, cfg worker.Config) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			return fmt.Errorf("run did not return 15s after cancel")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

func TestRunStoresLines(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	cfg := setup(t, dsn)
	stop := start(t, cfg)

	nc, err := nats.Connect(cfg.NATS.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	const n = 20
	for i := range n {
		if _, err := js.Publish(t.Context(), topology.Subject("smoke"), fmt.Appendf(nil, `{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	eventually(t, "lines stored", func() error {
		var got int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE source = 'smoke'`).Scan(&got); err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("%d rows, want %d", got, n)
		}
		return nil
	})
	eventually(t, "ready", func() error { return healthcheck(t.Context(), cfg, nil) })
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if err := healthcheck(t.Context(), cfg, nil); err == nil {
		t.Fatal("healthcheck passed after the worker stopped")
	}
}

func TestRunNotReadyWithoutDatabase(t *testing.T) {
	t.Parallel()
	cfg := setup(t, "postgres://postgres@"+freeAddr(t)+"/jetline?sslmode=disable")
	stop := start(t, cfg)
	// The health server answers while the worker waits for the database,
	// and readiness says why it is not ready.
	eventually(t, "not ready because of postgres", func() error {
		err := healthcheck(t.Context(), cfg, nil)
		if err == nil {
			return fmt.Errorf("ready without a database")
		}
		if !strings.Contains(err.Error(), "postgres") {
			return err
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestDispatchUnknownCommand(t *testing.T) {
	t.Parallel()
	err := dispatch(t.Context(), []string{"frobnicate"})
	if err == nil || !strings.Contains(err.Error(), "healthcheck") {
		t.Fatalf("dispatch(frobnicate) = %v, want an error listing the commands", err)
	}
}
