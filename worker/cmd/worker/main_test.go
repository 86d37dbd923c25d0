package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/worker"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// setup starts NATS and returns a config for run pointing at it and at
// databaseURL.
func setup(t *testing.T, databaseURL string) worker.Config {
	t.Helper()
	srv := testenv.NATS(t)
	var cfg worker.Config
	err := env.ParseWithOptions(&cfg, env.Options{Environment: map[string]string{
		"DATABASE_URL":            databaseURL,
		"NATS_URL":                srv.ClientURL(),
		"WORKER_HEALTH_ADDR":      testenv.FreeAddr(t),
		"WORKER_BATCH_BYTES":      "1048576",
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

func TestRunStoresLines(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	cfg := setup(t, dsn)
	stop := start(t, cfg)

	_, js := testenv.Connect(t, cfg.NATS.URL)
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
	testenv.Eventually(t, 20*time.Second, "lines stored", func() error {
		var got int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM events WHERE source = 'smoke'`).Scan(&got); err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("%d rows, want %d", got, n)
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, "ready", func() error { return healthcheck(t.Context(), cfg, nil) })
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if err := healthcheck(t.Context(), cfg, nil); err == nil {
		t.Fatal("healthcheck passed after the worker stopped")
	}
}

func TestRunNotReadyWithoutDatabase(t *testing.T) {
	t.Parallel()
	cfg := setup(t, "postgres://postgres@"+testenv.FreeAddr(t)+"/jetline?sslmode=disable")
	stop := start(t, cfg)
	// The health server answers while the worker waits for the database,
	// and readiness says why it is not ready.
	testenv.Eventually(t, 20*time.Second, "not ready because of postgres", func() error {
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

const tweetsSpec = "../../../deploy/pipelines/tweets.yaml"

func TestRunWithPipeline(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	cfg := setup(t, dsn)
	cfg.Pipelines = []string{tweetsSpec}
	stop := start(t, cfg)

	_, js := testenv.Connect(t, cfg.NATS.URL)
	for _, m := range []struct{ source, data string }{
		{"tweets", `{"id": 1, "created_at": "Mon Jan 01 10:00:00 +0000 2018", "text": " hi ", "lang": "en", "user": {"screen_name": "Ann"}}`},
		{"tweets", `{"id": 2, "created_at": "Mon Jan 01 10:00:00 +0000 2018", "text": "rt", "lang": "en", "user": {"screen_name": "Bob"}, "retweeted_status": {"id": 1}}`},
		{"smoke", `{"i": 1}`},
	} {
		if _, err := js.Publish(t.Context(), topology.Subject(m.source), []byte(m.data)); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	testenv.Eventually(t, 20*time.Second, "rows stored", func() error {
		var tweets, events int
		var author, text string
		if err := conn.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM tweets), (SELECT count(*) FROM events),
			(SELECT author FROM tweets WHERE id = 1), (SELECT text FROM tweets WHERE id = 1)`).Scan(&tweets, &events, &author, &text); err != nil {
			return err
		}
		if tweets != 1 || events != 1 || author != "ann" || text != "hi" {
			return fmt.Errorf("%d tweets (%s: %q), %d events; want 1 (ann: \"hi\"), 1", tweets, author, text, events)
		}
		return nil
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRunRefusesBadSpec(t *testing.T) {
	t.Parallel()
	bad := t.TempDir() + "/bad.yaml"
	if err := os.WriteFile(bad, []byte("source: tweets\ntable: tweets\ncolumns:\n  - {name: id, path: id, type: bigin}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := setup(t, "postgres://postgres@"+testenv.FreeAddr(t)+"/jetline?sslmode=disable")
	cfg.Pipelines = []string{bad}
	err := run(t.Context(), cfg)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:4:32: columns[0] (id).type: unknown type \"bigin\"") {
		t.Fatalf("run with a bad spec: %v", err)
	}
}

func TestCheckSpec(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := checkSpecTo(&out, []string{tweetsSpec, "../../../deploy/samples/tweets.ndjson"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`tweets.yaml: ok: source tweets (subject ingest.tweets)`,
		`CREATE TABLE IF NOT EXISTS "tweets"`,
		"line 1: filtered\n",
		`line 251: insert {"id": 9000000001, "created_at": "2018-03-06T10:00:00Z", "author": "nasty_case", "lang": "en", "text": "Héllo Café world", "retweet_count": 1, "favorite_count": 2, "hashtags": ["nowplaying","café"], "followers": 1234}`,
		"line 259: reject missing_field: column author: path user.screen_name is missing or null\n",
		"268 lines: 63 insert, 200 filtered, 5 rejected (bad_value 2, invalid_json 2, missing_field 1)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check-spec output lacks %q", want)
		}
	}
	if err := checkSpecTo(io.Discard, nil); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("check-spec without a file: %v", err)
	}
	if err := checkSpecTo(io.Discard, []string{"no-such.yaml"}); err == nil {
		t.Error("check-spec of a missing file succeeded")
	}
}

// When the NATS connection closes for good (here the server comes back
// with another token, and nats.go gives up after two refusals), run
// returns [worker.ErrClosed] with no prefix of its own: main prints
// "worker: nats connection closed", once "worker:", not three times.
func TestRunNATSClosedSaysWorkerOnce(t *testing.T) {
	t.Parallel()
	var nopts *server.Options
	srv := testenv.NATSWith(t, embeddednats.Options{Configure: func(o *server.Options) {
		o.Authorization = "before"
		nopts = o
	}})
	cfg := setup(t, testenv.Postgres(t))
	cfg.NATS.URL = "nats://before@" + srv.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	testenv.Eventually(t, 20*time.Second, "ready", func() error { return healthcheck(t.Context(), cfg, nil) })

	nopts.Authorization = "after"
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("run still running 30s after its NATS server changed token")
	}
	if !errors.Is(err, worker.ErrClosed) || err.Error() != "nats connection closed" {
		t.Fatalf("run = %v, want %q (main adds \"worker:\")", err, worker.ErrClosed)
	}
}
