package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// Environment variables that turn the test binary into a fake gateway or
// worker for the runner tests.
const (
	envFakeChild = "DEVRUN_FAKE_CHILD" // "1": act as a child
	envFakeCrash = "DEVRUN_FAKE_CRASH" // name of the child that exits 3 once ready
	envFakePG    = "DEVRUN_FAKE_PG"    // "1": workers must reach DATABASE_URL
)

func TestMain(m *testing.M) {
	// The runner under test starts a cluster's nodes as this binary.
	if os.Getenv(natsNodeEnv) != "" {
		os.Exit(natsNodeMain())
	}
	if os.Getenv(envFakeChild) == "1" {
		os.Exit(fakeChild())
	}
	os.Exit(m.Run())
}

// fakeChild stands in for the gateway or a worker: it checks that the
// servers the runner handed it are reachable, serves /readyz, and drains on
// SIGTERM, saying so on stdout for the test to read.
func fakeChild() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	name := cmp.Or(os.Getenv("WORKER_INSTANCE"), "gateway")
	addr := cmp.Or(os.Getenv("WORKER_HEALTH_ADDR"), os.Getenv("GATEWAY_HEALTH_ADDR"))

	nc, err := nats.Connect(os.Getenv("NATS_URL"))
	if err != nil {
		fmt.Println("nats failed:", err)
		return 1
	}
	defer nc.Close()
	fmt.Println("nats ok")
	if os.Getenv("WORKER_INSTANCE") != "" && os.Getenv(envFakePG) == "1" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
		cancel()
		if err != nil {
			fmt.Println("postgres failed:", err)
			return 1
		}
		conn.Close(context.Background())
		fmt.Println("postgres ok")
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("health failed:", err)
		return 1
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ready") }))

	if os.Getenv(envFakeCrash) == name {
		time.Sleep(300 * time.Millisecond)
		fmt.Println("crashing")
		return 3
	}
	<-sigs
	fmt.Println("draining")
	return 0
}

// runnerBundle is what setupRunner returns.
type runnerBundle struct {
	r      *runner
	out    *lockedBuffer // the children's lines and the runner's log
	banner *lockedBuffer
}

// setupRunner returns a runner whose gateway and workers are this test
// binary acting as fake children, on free ports, with its data in a
// temporary directory. It sets environment variables, so its tests cannot
// be parallel.
func setupRunner(t *testing.T) runnerBundle {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Postgres runs as an unprivileged user when we are root, and must be
	// able to reach its data directory.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ports := freePorts(t, 5)
	t.Setenv(envFakeChild, "1")
	t.Setenv("GATEWAY_LISTEN", fmt.Sprintf("127.0.0.1:%d", ports[0]))
	t.Setenv("LOG_FORMAT", "text")

	out, banner := &lockedBuffer{}, &lockedBuffer{}
	// Through the program's own parsing, so the defaults under test are
	// the ones `make run` gets.
	var cfg Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: map[string]string{
		"JETLINE_DATA_DIR":      dir,
		"JETLINE_GATEWAY_BIN":   self,
		"JETLINE_WORKER_BIN":    self,
		"JETLINE_NATS_PORT":     strconv.Itoa(ports[1]),
		"JETLINE_POSTGRES_PORT": strconv.Itoa(ports[2]),
		"JETLINE_HEALTH_PORT":   strconv.Itoa(ports[3]),
		"JETLINE_STOP_TIMEOUT":  "10s",
		"JETLINE_READY_TIMEOUT": "30s",
	}}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Log.Format = "text"
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runner output:\n%s", out.String())
		}
	})
	return runnerBundle{r: &runner{cfg: cfg, logger: logger, out: out, banner: banner}, out: out, banner: banner}
}

// freePorts returns n free ports on 127.0.0.1, of which the last three are
// consecutive (the runner hands out health ports base, base+1, base+2).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for len(ports) < n-3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	for base := 20000 + os.Getpid()%20000; base < 65000; base += 7 {
		free := true
		for p := base; p < base+3; p++ {
			if checkPortFree(fmt.Sprintf("127.0.0.1:%d", p), "", "") != nil {
				free = false
				break
			}
		}
		if free {
			return append(ports, base, base+1, base+2)
		}
	}
	t.Fatal("no three consecutive free ports")
	return nil
}

// start runs the runner in the background; the returned function stops it
// (as a first Ctrl-C would) and returns run's error.
func (b runnerBundle) start(t *testing.T) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hurry, cancelHurry := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.r.run(ctx, hurry) }()
	t.Cleanup(func() { cancel(); cancelHurry() })
	return func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(60 * time.Second):
			cancelHurry()
			t.Fatal("runner did not stop within 60s")
			return nil
		}
	}, errc
}

func TestRunnerStartsAndStopsEverything(t *testing.T) {
	b := setupRunner(t)
	t.Setenv(envFakePG, "1")
	stop, done := b.start(t)

	waitBanner(t, b, done, 90*time.Second)
	banner := b.banner.String()
	for _, want := range []string{
		"ncat " + strings.Replace(gatewayAddr(os.Getenv("GATEWAY_LISTEN")), ":", " ", 1) + " < file.ndjson",
		"| ncat ",
		fmt.Sprintf("psql 'postgres://postgres@127.0.0.1:%d/jetline?sslmode=disable' -c 'select count(*) from events'", b.r.cfg.PostgresPort),
		fmt.Sprintf("nats --server nats://127.0.0.1:%d stream info INGEST", b.r.cfg.NATSPort),
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	out := b.out.String()
	for _, want := range []string{"gateway  | nats ok", "worker-1 | nats ok", "worker-2 | nats ok", "worker-1 | postgres ok", "worker-2 | postgres ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	if err := stop(); err != nil {
		t.Fatalf("run after stop: %v", err)
	}
	out = b.out.String()
	gwDrained := strings.Index(out, "gateway  | draining")
	for _, w := range []string{"worker-1", "worker-2"} {
		i := strings.Index(out, w+" | draining")
		if i < 0 || gwDrained < 0 || i < gwDrained {
			t.Errorf("want the gateway drained before %s; output:\n%s", w, out)
		}
	}
	// Postgres and NATS are gone: their ports are free again and the
	// cluster's lock file names no live postmaster.
	for _, port := range []int{b.r.cfg.NATSPort, b.r.cfg.PostgresPort} {
		if err := checkPortFree(fmt.Sprintf("127.0.0.1:%d", port), "", ""); err != nil {
			t.Errorf("port %d still in use after stop: %v", port, err)
		}
	}
	if pid := leftoverPostmaster(filepath.Join(b.r.cfg.DataDir, "postgres")); pid != 0 {
		t.Errorf("postgres (pid %d) still running after stop", pid)
	}
}

func TestRunnerStopsWhenAChildKeepsFailing(t *testing.T) {
	b := setupRunner(t)
	b.r.cfg.DatabaseURL = "postgres://nobody@127.0.0.1:1/none" // not started, not used
	t.Setenv(envFakeCrash, "worker-2")
	start := time.Now()
	_, done := b.start(t)

	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("runner kept running while a child kept crashing")
	}
	t.Logf("stopped after %s", time.Since(start))
	logPath := filepath.Join(b.r.cfg.DataDir, "logs", "worker-2.log")
	for _, want := range []string{"worker-2 keeps failing", "exit status 3", "exceed the 5 allowed", logPath} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run = %v, want an error saying %q", err, want)
		}
	}
	out := b.out.String()
	// The first run and the five restarts the default intensity allows.
	if n := strings.Count(out, "worker-2 | crashing"); n != 6 {
		t.Errorf("worker-2 crashed %d times, want 6", n)
	}
	for _, want := range []string{"gateway  | draining", "worker-1 | draining"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if logFile, err := os.ReadFile(logPath); err != nil || strings.Count(string(logFile), "crashing") != 6 {
		t.Errorf("log file %s (err %v) should hold the six runs' output:\n%s", logPath, err, logFile)
	}
	if err := checkPortFree(fmt.Sprintf("127.0.0.1:%d", b.r.cfg.NATSPort), "", ""); err != nil {
		t.Errorf("embedded nats still listening: %v", err)
	}
}

func TestRunnerRefusesBusyPort(t *testing.T) {
	b := setupRunner(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", b.r.cfg.NATSPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = b.r.run(context.Background(), context.Background())
	if !errors.Is(err, errPortInUse) || !strings.Contains(err.Error(), "NATS_URL") {
		t.Fatalf("run = %v, want errPortInUse with a hint about NATS_URL", err)
	}
}

func TestRunnerRefusesMissingBinary(t *testing.T) {
	b := setupRunner(t)
	b.r.cfg.WorkerBin = filepath.Join(t.TempDir(), "worker")
	err := b.r.run(context.Background(), context.Background())
	if err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("run = %v, want an error telling to run make build", err)
	}
}
