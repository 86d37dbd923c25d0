package testenv

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
)

// NATS starts an embedded NATS JetStream server on a free loopback port
// with its store in a temporary directory, stopped when t ends. Every call
// gets its own server, so tests may run in parallel. It fails the test if the
// server cannot start: being a library, it has no reason to be missing.
func NATS(t testing.TB) *embeddednats.Server {
	t.Helper()
	return NATSWith(t, embeddednats.Options{})
}

// NATSWith is [NATS] with a server started with opts, for tests that need
// credentials, TLS or limits; the port and store directory in opts are
// replaced.
func NATSWith(t testing.TB, opts embeddednats.Options) *embeddednats.Server {
	t.Helper()
	opts.Port, opts.StoreDir = -1, t.TempDir()
	srv, err := embeddednats.Start(opts, Logger(t))
	if err != nil {
		t.Fatalf("testenv: start embedded nats: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// NATSWithPassword is [NATS] with a server that lets in only user with
// password.
func NATSWithPassword(t testing.TB, user, password string) *embeddednats.Server {
	t.Helper()
	return NATSWith(t, embeddednats.Options{Configure: func(o *server.Options) {
		o.Users = []*server.User{{Username: user, Password: password}}
	}})
}

// NATSWithToken is [NATS] with a server that lets in only clients that
// present token.
func NATSWithToken(t testing.TB, token string) *embeddednats.Server {
	t.Helper()
	return NATSWith(t, embeddednats.Options{Configure: func(o *server.Options) { o.Authorization = token }})
}

// JetStream starts a server with [NATS] and returns a JetStream context on
// it, for tests that need nothing else from the server.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := Connect(t, NATS(t).ClientURL())
	return js
}

// Connect connects to the NATS server at url with default options and
// returns the connection, closed when t ends, and a JetStream context on
// it. It fails the test if either cannot be made.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("testenv: connect to nats at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: jetstream context: %v", err)
	}
	return nc, js
}

// NATSCluster starts an n-node embedded JetStream cluster on free loopback
// ports, each node with its store in a temporary directory, waits until it
// has elected a meta leader and stops it when t ends. See
// [embeddednats.Cluster] for stopping, restarting and finding leaders.
func NATSCluster(t testing.TB, n int) *embeddednats.Cluster {
	t.Helper()
	c := NATSClusterStopped(t, n)
	if err := c.Start(); err != nil {
		t.Fatalf("testenv: start embedded nats cluster: %v", err)
	}
	if err := c.WaitForMetaLeader(30 * time.Second); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c
}

// NATSClusterStopped is [NATSCluster] with no node started yet: its URL is
// known, so start-order tests can start programs first and then the nodes
// ([embeddednats.Cluster.StartNode], [embeddednats.Cluster.Start]).
func NATSClusterStopped(t testing.TB, n int) *embeddednats.Cluster {
	t.Helper()
	c, err := embeddednats.NewCluster(embeddednats.Options{StoreDir: t.TempDir()}, n, Logger(t))
	if err != nil {
		t.Fatalf("testenv: make embedded nats cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}
