package embeddednats_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/devkit/embeddednats"
	"github.com/jetline/jetline/shared/devkit/testenv"
)

func TestStartRestartKeepsStream(t *testing.T) {
	t.Parallel()
	logger := testenv.Logger(t)
	srv, err := embeddednats.Start(embeddednats.Options{Port: -1, StoreDir: t.TempDir()}, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.MaxPayload(); got != embeddednats.DefaultMaxPayload {
		t.Fatalf("max payload = %d, want %d", got, embeddednats.DefaultMaxPayload)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := topology.StreamConfig{MaxBytes: 1 << 20, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 1}
	if _, err := topology.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	// Idempotent: a second process starting with the same config is fine.
	if _, err := topology.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	if _, err := js.Publish(ctx, topology.Subject("t"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// A request sent while the client reconnects can go unanswered: each
	// try waits 2 s at most, so that the next is sent.
	var info *jetstream.StreamInfo
	testenv.Eventually(t, 20*time.Second, "the stream after restart", func() error {
		tryCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		s, err := js.Stream(tryCtx, topology.StreamName)
		if err == nil {
			info, err = s.Info(tryCtx)
		}
		return err
	})
	if info.State.Msgs != 1 {
		t.Fatalf("messages after restart = %d, want 1", info.State.Msgs)
	}
}

// TestClusterLosesAndRegainsALeader starts a three-node cluster, puts an
// R3 stream on it, stops the stream's leader (another node takes over and
// the stream keeps its messages) and starts it again on its own store.
func TestClusterLosesAndRegainsALeader(t *testing.T) {
	t.Parallel()
	logger := testenv.Logger(t)
	c, err := embeddednats.StartCluster(embeddednats.Options{StoreDir: t.TempDir()}, 3, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	if got := strings.Count(c.URL(), "nats://"); got != 3 {
		t.Fatalf("URL %q names %d servers, want 3", c.URL(), got)
	}
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cfg := topology.StreamConfig{MaxBytes: 1 << 20, DuplicateWindow: topology.MinDuplicateWindow, Replicas: 3}
	if _, err := topology.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, topology.Subject("t"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	leader := c.StreamLeader(topology.StreamName)
	if leader == nil {
		t.Fatal("the R3 stream has no leader")
	}
	i := c.Index(leader)
	c.StopNode(i)
	testenv.Eventually(t, 20*time.Second, "a new stream leader", func() error {
		if l := c.StreamLeader(topology.StreamName); l == nil || l == leader {
			return fmt.Errorf("leader is %v, was %v", l, leader)
		}
		return nil
	})
	if err := c.StartNode(i); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the restarted node to catch up", func() error {
		s, err := js.Stream(ctx, topology.StreamName)
		if err != nil {
			return err
		}
		info := s.CachedInfo()
		if info.State.Msgs != 1 || info.Cluster == nil {
			return fmt.Errorf("stream holds %d messages (cluster info: %t), want 1", info.State.Msgs, info.Cluster != nil)
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current {
				return fmt.Errorf("replica %s is not current", r.Name)
			}
		}
		if n := len(info.Cluster.Replicas); n != 2 {
			return fmt.Errorf("%d replicas besides the leader, want 2", n)
		}
		return nil
	})
}
