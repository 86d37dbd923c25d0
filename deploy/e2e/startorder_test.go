package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
	"github.com/jetline/jetline/shared/runtime/health"
)

// TestStartOrder starts a gateway and two workers with INGEST_REPLICAS=3
// against a three-node JetStream cluster that cannot take their streams
// yet, as compose or Kubernetes start them all at once, and starts the
// missing nodes a second later. Waiting, each program is alive and not
// ready and says why; then, without a restart, all become ready and a line
// sent through the gateway lands in Postgres.
func TestStartOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// early is how many nodes run before the programs start.
		early int
	}{
		// One node of three has no majority: no meta leader, and the
		// JetStream API does not answer.
		{"cluster without a meta leader", 1},
		// Nothing answers at all: the programs wait for NATS first.
		{"before any node", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, cluster := setupCluster(t, 3)
			for i := range tc.early {
				if err := cluster.StartNode(i); err != nil {
					t.Fatal(err)
				}
			}
			env := map[string]string{"INGEST_REPLICAS": "3", "LOG_LEVEL": "info"}
			gw := b.launchGateway(t, env)
			ws := []*proc{b.launchWorker(t, env), b.launchWorker(t, env)}
			all := append([]*proc{gw.proc}, ws...)

			for _, p := range all {
				b.checkStarting(t, p)
			}
			time.Sleep(time.Second)
			for _, p := range all {
				b.checkStarting(t, p)
			}
			start := time.Now()
			if err := cluster.Start(); err != nil {
				t.Fatal(err)
			}
			for _, p := range all {
				if err := pollReady(p, func() error { return health.Probe(p.readyURL, time.Second) }); err != nil {
					t.Fatalf("%s not ready: %v", p.name, err)
				}
			}
			t.Logf("all three programs ready %s after the cluster's last nodes started", time.Since(start).Round(time.Millisecond))
			b.connectCluster(t, cluster)
			for _, p := range all {
				if !strings.Contains(p.stderr.String(), `"msg":"waiting for `) {
					t.Errorf("%s did not log what it waited for", p.name)
				}
			}

			s, err := b.js.Stream(t.Context(), topology.StreamName)
			if err != nil {
				t.Fatal(err)
			}
			if n := s.CachedInfo().Config.Replicas; n != 3 {
				t.Fatalf("stream %s has %d replicas, want 3", topology.StreamName, n)
			}
			conn := dial(t, gw.addrs[topology.DefaultSource])
			line := `{"id":"start-order","text":"sent once every program is ready"}` + "\n"
			r, err := sendLines(conn, []byte(line), rngFor(inputSeed(t), 0))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != "ok" || r.Lines != 1 {
				t.Fatalf("receipt %+v, want ok for 1 line", r)
			}
			b.waitFor(t, 30*time.Second, "the line to land", func() (bool, string) {
				n := b.rowCount(t)
				return n == 1, fmt.Sprintf("%d rows", n)
			})
			// Converged without a restart: the processes that were
			// started first are the ones that serve.
			b.checkAlive(t)
		})
	}
}

// setupCluster is [setup] for a test of its own n-node JetStream cluster,
// none of whose nodes is started: the test starts them when it likes,
// then calls [bundle.connectCluster] before using b.js.
func setupCluster(t *testing.T, n int) (*bundle, *embeddednats.Cluster) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	cluster := testenv.NATSClusterStopped(t, n)
	b := &bundle{natsURL: cluster.URL(), dsn: testenv.Postgres(t), streamMaxBytes: defaultStreamMaxBytes}
	// Cleanups run last-registered first: the programs stop before the
	// cluster does.
	t.Cleanup(func() { b.stopAll(t) })
	var err error
	if b.db, err = pgxpool.New(context.Background(), b.dsn); err != nil {
		t.Fatalf("open database pool: %v", err)
	}
	t.Cleanup(b.db.Close)
	return b, cluster
}

// connectCluster connects b.js to cluster, whose nodes run.
func (b *bundle) connectCluster(t *testing.T, cluster *embeddednats.Cluster) {
	t.Helper()
	nc, err := nats.Connect(cluster.URL())
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	if b.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
}

// launchGateway starts a gateway listening on a free port for the default
// source, with extra added to its environment, and does not wait for it.
func (b *bundle) launchGateway(t *testing.T, extra map[string]string) *gatewayProc {
	t.Helper()
	addr, healthAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	env := map[string]string{
		"GATEWAY_LISTEN":           addr,
		"GATEWAY_HEALTH_ADDR":      healthAddr,
		"GATEWAY_SHUTDOWN_TIMEOUT": "10s",
	}
	maps.Copy(env, extra)
	g := &gatewayProc{
		proc:       startProc(t, "gateway", programs.gateway, b.env(env)),
		addrs:      map[string]string{topology.DefaultSource: addr},
		metricsURL: "http://" + healthAddr + "/metrics",
	}
	g.readyURL = "http://" + healthAddr + "/readyz"
	b.track(g.proc)
	return g
}

// launchWorker starts a worker, with extra added to its environment, and
// does not wait for it.
func (b *bundle) launchWorker(t *testing.T, extra map[string]string) *proc {
	t.Helper()
	b.mu.Lock()
	b.nextW++
	name := fmt.Sprintf("worker-%d", b.nextW)
	b.mu.Unlock()
	healthAddr := testenv.FreeAddr(t)
	env := map[string]string{
		"DATABASE_URL":            b.dsn,
		"WORKER_HEALTH_ADDR":      healthAddr,
		"WORKER_INSTANCE":         name,
		"WORKER_ACK_WAIT":         ackWait.String(),
		"WORKER_CONCURRENCY":      "1",
		"WORKER_SHUTDOWN_TIMEOUT": "10s",
	}
	maps.Copy(env, extra)
	p := startProc(t, name, programs.worker, b.env(env))
	p.readyURL = "http://" + healthAddr + "/readyz"
	b.track(p)
	return p
}

// checkStarting fails the test unless p, which waits for its servers, is
// alive (/healthz answers) and not ready (/readyz answers 503 saying what
// it waits for).
func (b *bundle) checkStarting(t *testing.T, p *proc) {
	t.Helper()
	base := strings.TrimSuffix(p.readyURL, "/readyz")
	if err := pollReady(p, func() error { return health.Probe(base+"/healthz", time.Second) }); err != nil {
		t.Fatalf("%s /healthz: %v", p.name, err)
	}
	resp, err := http.Get(p.readyURL)
	if err != nil {
		t.Fatalf("%s /readyz: %v", p.name, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "starting: ") {
		t.Fatalf("%s /readyz while it waits for the cluster = %s %q, want 503 saying what it waits for", p.name, resp.Status, body)
	}
	t.Logf("%s: %s", p.name, strings.TrimSpace(string(body)))
}
