package topology_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

// r3 is an ingest stream configuration for a three-node cluster.
var r3 = topology.StreamConfig{MaxBytes: 64 << 20, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 3}

// TestEnsureStreamConcurrentOnCluster starts several processes' worth of
// EnsureStream at once on a three-node cluster, each through its own
// connection to one of the nodes, half of them with a different size limit
// (as when one gateway was restarted with a new INGEST_MAX_BYTES): the
// creations race, and those that lose to a different configuration must
// read the stream back and update it. All succeed and there is one R3
// stream.
func TestEnsureStreamConcurrentOnCluster(t *testing.T) {
	t.Parallel()
	c := testenv.NATSCluster(t, 3)
	const callers = 10
	jss := make([]jetstream.JetStream, callers)
	for i := range jss {
		_, jss[i] = testenv.Connect(t, c.NodeURL(i%c.Size()))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := make(chan struct{})
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i, js := range jss {
		cfg := r3
		if i%2 == 1 {
			cfg.MaxBytes *= 2
		}
		wg.Go(func() {
			<-start
			_, errs[i] = topology.Retry{Timeout: 20 * time.Second, Logger: testenv.Logger(t)}.EnsureStream(ctx, js, cfg)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	var names []string
	for name := range jss[0].StreamNames(ctx).Name() {
		names = append(names, name)
	}
	if len(names) != 1 || names[0] != topology.StreamName {
		t.Fatalf("streams %q, want just %s", names, topology.StreamName)
	}
	s, err := jss[0].Stream(ctx, topology.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream has %d replicas (cluster %+v), want 3", info.Config.Replicas, info.Cluster)
	}
}

// TestEnsureStreamWaitsForMetaLeader connects to the one running node of
// a three-node cluster, which cannot elect a meta leader alone, and starts
// the other two a second later: EnsureStream waits, logging what for,
// and succeeds.
func TestEnsureStreamWaitsForMetaLeader(t *testing.T) {
	t.Parallel()
	c := testenv.NATSClusterStopped(t, 3)
	if err := c.StartNode(0); err != nil {
		t.Fatal(err)
	}
	_, js := testenv.Connect(t, c.NodeURL(0))
	var logs testenv.Buffer
	var reported []string
	var mu sync.Mutex
	r := topology.Retry{
		Timeout: 30 * time.Second,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Waiting: func(s string) { mu.Lock(); reported = append(reported, s); mu.Unlock() },
	}
	go func() {
		time.Sleep(time.Second)
		for i := 1; i < c.Size(); i++ {
			if err := c.StartNode(i); err != nil {
				t.Error(err)
			}
		}
	}()
	start := time.Now()
	if _, err := r.EnsureStream(t.Context(), js, r3); err != nil {
		t.Fatalf("EnsureStream: %v\nlog:\n%s", err, logs.String())
	}
	t.Logf("stream created %s after the first node started; log:\n%s", time.Since(start).Round(time.Millisecond), logs.String())
	mu.Lock()
	defer mu.Unlock()
	if len(reported) == 0 || !strings.Contains(logs.String(), "waiting for ") {
		t.Fatalf("EnsureStream did not say what it waited for (reported %q)", reported)
	}
}

// TestEnsureStreamTooManyReplicas asks a formed three-node cluster for
// five replicas, which it will never place: EnsureStream gives up when its
// timeout passes with a message saying what it waited for and what to
// check.
func TestEnsureStreamTooManyReplicas(t *testing.T) {
	t.Parallel()
	c := testenv.NATSCluster(t, 3)
	_, js := testenv.Connect(t, c.URL())
	cfg := r3
	cfg.Replicas = 5
	_, err := topology.Retry{Timeout: time.Second}.EnsureStream(t.Context(), js, cfg)
	if err == nil {
		t.Fatal("EnsureStream with 5 replicas on 3 servers succeeded")
	}
	for _, want := range []string{"stream INGEST with 5 replicas", "gave up after", "no suitable peers", "INGEST_REPLICAS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestEnsureStreamReplicasOnSingleServer fails at once: a server outside a
// cluster never takes three replicas.
func TestEnsureStreamReplicasOnSingleServer(t *testing.T) {
	t.Parallel()
	js := testenv.JetStream(t)
	start := time.Now()
	_, err := topology.Retry{Timeout: time.Minute}.EnsureStream(t.Context(), js, r3)
	if err == nil || !strings.Contains(err.Error(), "INGEST_REPLICAS=1") {
		t.Fatalf("EnsureStream = %v, want a hint to set INGEST_REPLICAS=1", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("EnsureStream took %s to fail; a permanent error must fail at once", d)
	}
}
