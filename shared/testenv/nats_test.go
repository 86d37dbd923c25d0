package testenv

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestJetStream(t *testing.T) {
	t.Parallel()
	a, b := JetStream(t), JetStream(t)
	ctx := t.Context()
	if _, err := a.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Publish(ctx, "t", []byte("x")); err != nil {
		t.Fatalf("publish on the new stream: %v", err)
	}
	// Each call has its own server: b does not see a's stream.
	if _, err := b.Stream(ctx, "T"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream T on the second server: err = %v, want %v (a server of its own)", err, jetstream.ErrStreamNotFound)
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()
	srv := NATS(t)
	nc, js := Connect(t, srv.ClientURL())
	if !nc.IsConnected() {
		t.Fatalf("connection status %v, want connected", nc.Status())
	}
	if _, err := js.AccountInfo(t.Context()); err != nil {
		t.Fatalf("jetstream account info: %v", err)
	}
}
