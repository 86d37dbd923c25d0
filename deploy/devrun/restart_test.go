package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/health"
)

// realPrograms are the gateway and the worker, built once for the tests
// that run them under the runner.
var realPrograms struct {
	once            sync.Once
	gateway, worker string
	err             error
}

// buildPrograms builds the gateway and the worker into a temporary
// directory (without -race: the runner under test is what this package
// checks; deploy/e2e checks the programs under the race detector).
func buildPrograms(t *testing.T) (gateway, worker string) {
	t.Helper()
	realPrograms.once.Do(func() {
		dir, err := os.MkdirTemp("", "jetline-devrun-bin-")
		if err != nil {
			realPrograms.err = err
			return
		}
		start := time.Now()
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"github.com/jetline/jetline/gateway/cmd/gateway", "github.com/jetline/jetline/worker/cmd/worker")
		if out, err := cmd.CombinedOutput(); err != nil {
			realPrograms.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		t.Logf("built the gateway and the worker in %s", time.Since(start).Round(time.Millisecond))
		realPrograms.gateway, realPrograms.worker = filepath.Join(dir, "gateway"), filepath.Join(dir, "worker")
	})
	if realPrograms.err != nil {
		t.Fatal(realPrograms.err)
	}
	return realPrograms.gateway, realPrograms.worker
}

// TestRunnerRestartsKilledChildren is `make run` with the real gateway and
// workers, a real Postgres and NATS: while a connection's lines flow, worker-1
// is killed with SIGKILL; then, between connections, the gateway; then the
// private Postgres. Each must come back on its ports, and every line sent
// must land in table events exactly once.
//
// The gateway is killed between connections, not during one, on purpose: a
// sender cut off mid-connection gets no receipt, and sending its lines again
// to the restarted gateway (a new instance, so new line identities) would
// store those already stored a second time, which the raw landing, keyed by
// line identity, is documented to do. What a supervisor must guarantee is
// that the gateway comes back and serves; a worker, though, is killed while
// it holds lines, whose redelivery must not store them twice.
func TestRunnerRestartsKilledChildren(t *testing.T) {
	gatewayBin, workerBin := buildPrograms(t)
	b := setupRunner(t)
	b.r.cfg.GatewayBin, b.r.cfg.WorkerBin = gatewayBin, workerBin
	// A killed worker's lines are redelivered after the ack wait.
	t.Setenv("WORKER_ACK_WAIT", "4s")
	t.Setenv("WORKER_RETRY_BACKOFF", "200ms")
	t.Setenv("WORKER_RETRY_MAX_BACKOFF", "1s")
	stop, done := b.start(t)
	waitBanner(t, b, done, 60*time.Second)

	gatewayAddr := os.Getenv("GATEWAY_LISTEN")
	dbURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/jetline?sslmode=disable", b.r.cfg.PostgresPort)
	const firstLines, secondLines = 40_000, 10_000

	// Worker-1 is killed once rows land and the sender is still sending.
	sent := make(chan error, 1)
	go func() { sent <- sendLines(gatewayAddr, 0, firstLines, 3*time.Second) }()
	testenv.Eventually(t, 30*time.Second, "rows in events", rowsAtLeast(dbURL, 1))
	select {
	case err := <-sent:
		t.Fatalf("the sender finished (%v) before worker-1 could be killed while lines flow", err)
	default:
	}
	kill(t, b, "worker-1")
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	waitRestarted(t, b, "worker-1", fmt.Sprintf("127.0.0.1:%d", b.r.cfg.HealthPort+1))

	// The gateway, while the workers still store the first connection.
	kill(t, b, "gateway")
	waitRestarted(t, b, "gateway", fmt.Sprintf("127.0.0.1:%d", b.r.cfg.HealthPort))

	// Postgres, under the workers.
	kill(t, b, "postgres")
	testenv.Eventually(t, 30*time.Second, "postgres restarted", logged(b, "msg=restarted component=supervisor child=postgres"))
	if err := sendLines(gatewayAddr, firstLines, secondLines, 0); err != nil {
		t.Fatal(err)
	}

	const total = firstLines + secondLines
	var rows, distinct, lo, hi int64
	testenv.Eventually(t, 45*time.Second, fmt.Sprintf("%d rows in events", total), func() error {
		rows, distinct, lo, hi = eventStats(dbURL)
		if rows < total {
			return fmt.Errorf("%d rows", rows)
		}
		return nil
	})
	if rows != total || distinct != total || lo != 0 || hi != total-1 {
		t.Errorf("events holds %d rows of %d distinct lines numbered %d to %d; want each of the %d lines sent (0 to %d) once",
			rows, distinct, lo, hi, total, total-1)
	}
	out := b.out.String()
	for _, name := range []string{"worker-1", "gateway", "postgres"} {
		if !strings.Contains(out, "msg=restarting component=supervisor child="+name+` exit="signal: killed"`) {
			t.Errorf("no restart of %s logged with its exit status", name)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run after stop: %v", err)
	}
	if pid := leftoverPostmaster(postgresDir(b.r.cfg)); pid != 0 {
		t.Errorf("postgres (pid %d) still running after stop", pid)
	}
}

// waitBanner waits until the runner has printed its instructions.
func waitBanner(t *testing.T, b runnerBundle, done <-chan error, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(b.banner.String(), "Press Ctrl-C to stop") {
		select {
		case err := <-done:
			t.Fatalf("runner ended before it was ready: %v", err)
		case <-deadline:
			t.Fatalf("no banner after %s", timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// rowsAtLeast is a condition for [testenv.Eventually]: events holds at
// least n rows.
func rowsAtLeast(dbURL string, n int64) func() error {
	return func() error {
		if got := countEvents(dbURL); got < n {
			return fmt.Errorf("%d rows", got)
		}
		return nil
	}
}

// logged is a condition for [testenv.Eventually]: the runner's output
// holds s.
func logged(b runnerBundle, s string) func() error {
	return func() error {
		if !strings.Contains(b.out.String(), s) {
			return fmt.Errorf("not logged yet")
		}
		return nil
	}
}

// kill sends SIGKILL to the current run of child name, as the supervisor
// logged it.
func kill(t *testing.T, b runnerBundle, name string) {
	t.Helper()
	re := regexp.MustCompile(`msg=(?:started|restarted) component=supervisor child=` + regexp.QuoteMeta(name) + ` pid=(\d+)`)
	m := re.FindAllStringSubmatch(b.out.String(), -1)
	if m == nil {
		t.Fatalf("no pid of %s in the log", name)
	}
	pid, _ := strconv.Atoi(m[len(m)-1][1])
	t.Logf("killing %s (pid %d)", name, pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", name, err)
	}
}

// waitRestarted waits until the supervisor has restarted child name and
// the child answers /readyz on healthAddr, its port from before.
func waitRestarted(t *testing.T, b runnerBundle, name, healthAddr string) {
	t.Helper()
	start := time.Now()
	restarted := logged(b, "msg=restarted component=supervisor child="+name+" ")
	testenv.Eventually(t, 30*time.Second, name+" restarted and ready", func() error {
		if err := restarted(); err != nil {
			return err
		}
		return health.Probe("http://"+healthAddr+"/readyz", time.Second)
	})
	t.Logf("%s back and ready in %s", name, time.Since(start).Round(time.Millisecond))
}

// sendLines sends lines numbered from first to first+n-1 on one
// connection, spread over about pace, and checks the receipt.
func sendLines(addr string, first, n int, pace time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return fmt.Errorf("dial gateway: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	const chunks = 50
	w := bufio.NewWriter(c)
	for i := range n {
		fmt.Fprintf(w, `{"n":%d,"text":"a line that went through a runner whose children were killed"}`+"\n", first+i)
		if (i+1)%(n/chunks) == 0 {
			if err := w.Flush(); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			time.Sleep(pace / chunks)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	var r struct {
		Status string `json:"status"`
		Lines  int    `json:"lines"`
	}
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return fmt.Errorf("read receipt: %w", err)
	}
	if r.Status != "ok" || r.Lines != n {
		return fmt.Errorf("receipt %+v for %d lines, want status ok and every line", r, n)
	}
	return nil
}

// countEvents returns the rows in table events, 0 if it cannot tell.
func countEvents(dbURL string) int64 {
	rows, _, _, _ := eventStats(dbURL)
	return rows
}

// eventStats returns the rows in events, the distinct line numbers among
// them and the lowest and highest; zeros if it cannot tell.
func eventStats(dbURL string) (rows, distinct, lo, hi int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, 0, 0, 0
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT payload->>'n'),
		coalesce(min((payload->>'n')::bigint), 0), coalesce(max((payload->>'n')::bigint), 0) FROM events`).Scan(&rows, &distinct, &lo, &hi)
	if err != nil {
		return 0, 0, 0, 0
	}
	return rows, distinct, lo, hi
}
