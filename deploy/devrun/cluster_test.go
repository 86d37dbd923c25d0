package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// TestRunnerCluster is `make run NATS_NODES=3` with the real gateway and
// workers: the runner starts three embedded JetStream nodes as child
// processes on consecutive client ports, and the programs, given every
// node's URL and INGEST_REPLICAS=3 by the runner, create INGEST replicated
// on all three and carry lines into Postgres, also while the stream's
// leader is SIGKILLed and restarted.
func TestRunnerCluster(t *testing.T) {
	gatewayBin, workerBin := buildPrograms(t)
	b := setupRunner(t)
	b.r.cfg.GatewayBin, b.r.cfg.WorkerBin = gatewayBin, workerBin
	b.r.cfg.NATSNodes = 3
	b.r.cfg.NATSPort = clusterBasePort(t, 3)
	if err := b.r.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The runner sets INGEST_REPLICAS for its children when it is unset;
	// t.Setenv restores it (unset) when the test ends.
	t.Setenv("INGEST_REPLICAS", "")
	os.Unsetenv("INGEST_REPLICAS")
	stop, done := b.start(t)
	waitBanner(t, b, done, 90*time.Second)

	_, js := testenv.Connect(t, fmt.Sprintf("nats://127.0.0.1:%d", b.r.cfg.NATSPort+2))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "INGEST")
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Name != embeddednats.ClusterName || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("INGEST has %d replicas, cluster %+v; want R3 on cluster %s", info.Config.Replicas, info.Cluster, embeddednats.ClusterName)
	}

	const lines = 2_000
	if err := sendLines(os.Getenv("GATEWAY_LISTEN"), 0, lines, 0); err != nil {
		t.Fatal(err)
	}
	dbURL := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/jetline?sslmode=disable", b.r.cfg.PostgresPort)
	testenv.Eventually(t, 45*time.Second, fmt.Sprintf("%d rows in events", lines), rowsAtLeast(dbURL, lines))

	// Each node is a child process of its own: SIGKILL the stream's
	// leader (node jetline-<i> runs as child nats-<i>) while lines flow.
	// The other two elect a new leader and carry the lines on, and the
	// supervisor brings the node back on its store.
	leader := "nats-" + strings.TrimPrefix(info.Cluster.Leader, "jetline-")
	sent := make(chan error, 1)
	go func() { sent <- sendLines(os.Getenv("GATEWAY_LISTEN"), lines, lines, 2*time.Second) }()
	time.Sleep(500 * time.Millisecond)
	kill(t, b, leader)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("%d rows in events", 2*lines), rowsAtLeast(dbURL, 2*lines))
	testenv.Eventually(t, 30*time.Second, leader+" restarted", logged(b, "msg=restarted component=supervisor child="+leader+" "))
	if rows, distinct, lo, hi := eventStats(dbURL); rows != 2*lines || distinct != 2*lines || lo != 0 || hi != 2*lines-1 {
		t.Fatalf("events has %d rows of %d distinct lines %d–%d, want lines 0–%d once each", rows, distinct, lo, hi, 2*lines-1)
	}
	if err := stop(); err != nil {
		t.Fatalf("run after stop: %v", err)
	}
}

// clusterBasePort returns a client port p such that the n client ports
// from p and the n route ports from p+[embeddednats.RoutePortOffset] are
// free on 127.0.0.1.
func clusterBasePort(t *testing.T, n int) int {
	t.Helper()
	for base := 30000 + os.Getpid()%20000; base+embeddednats.RoutePortOffset+n < 65535; base += 11 {
		free := true
		for i := range n {
			for _, p := range []int{base + i, base + embeddednats.RoutePortOffset + i} {
				if checkPortFree(fmt.Sprintf("127.0.0.1:%d", p), "", "") != nil {
					free = false
				}
			}
		}
		if free {
			return base
		}
	}
	t.Fatal("no free ports for a cluster")
	return 0
}
