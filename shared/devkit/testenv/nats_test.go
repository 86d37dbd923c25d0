package testenv

import (
	"errors"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
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

func TestNATSWith(t *testing.T) {
	t.Parallel()
	srv := NATSWith(t, embeddednats.Options{Configure: func(o *server.Options) { o.Authorization = "s3cret" }})
	wantAuth(t, srv.ClientURL(), nats.Token("s3cret"))
}

func TestNATSWithPassword(t *testing.T) {
	t.Parallel()
	wantAuth(t, NATSWithPassword(t, "jet", "s3cret").ClientURL(), nats.UserInfo("jet", "s3cret"))
}

func TestNATSWithToken(t *testing.T) {
	t.Parallel()
	wantAuth(t, NATSWithToken(t, "s3cret").ClientURL(), nats.Token("s3cret"))
}

// wantAuth checks that the server at url refuses a client without
// credentials and lets in one with cred.
func wantAuth(t *testing.T, url string, cred nats.Option) {
	t.Helper()
	if _, err := nats.Connect(url); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connect without credentials: err = %v, want %v", err, nats.ErrAuthorization)
	}
	nc, err := nats.Connect(url, cred)
	if err != nil {
		t.Fatalf("connect with credentials: %v", err)
	}
	nc.Close()
}
