package embeddednats_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/embeddednats"
	"github.com/jetline/jetline/shared/topology"
)

func TestStartRestartKeepsStream(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
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
	var info *jetstream.StreamInfo
	for deadline := time.Now().Add(10 * time.Second); ; {
		s, err := js.Stream(ctx, topology.StreamName)
		if err == nil {
			info, err = s.Info(ctx)
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("messages after restart = %d, want 1", info.State.Msgs)
	}
}
