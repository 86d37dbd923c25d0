package deploy

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/jetline/jetline/shared/devkit/embeddednats"
)

// TestNATSConfig parses deploy/nats/nats.conf with the server's own parser
// and checks the settings jetline relies on.
func TestNATSConfig(t *testing.T) {
	t.Parallel()
	opts, err := server.ProcessConfigFile("nats/nats.conf")
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	checkServerOptions(t, "nats/nats.conf", opts)
	if opts.Port != 4222 || opts.HTTPPort != 8222 {
		t.Errorf("ports %d/%d, want client 4222 and monitoring 8222", opts.Port, opts.HTTPPort)
	}
	if opts.Cluster.Port != 0 {
		t.Errorf("single server config has a cluster port %d", opts.Cluster.Port)
	}
}

// TestNATSConfigServes starts a server from nats.conf (on free ports, with a
// temporary store) and asks the monitoring endpoint the compose healthcheck
// uses.
func TestNATSConfigServes(t *testing.T) {
	t.Parallel()
	opts, err := server.ProcessConfigFile("nats/nats.conf")
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "127.0.0.1", -1
	opts.StoreDir = t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server from nats.conf not ready")
	}
	url := fmt.Sprintf("http://%s/healthz?js-enabled-only=true", s.MonitorAddr())
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %s", url, resp.Status)
	}
	if !s.JetStreamEnabled() {
		t.Error("JetStream not enabled")
	}
}

// TestNATSClusterConfig parses the three servers of the cluster profile.
func TestNATSClusterConfig(t *testing.T) {
	t.Parallel()
	project := loadCompose(t, "cluster")
	names := map[string]bool{}
	for i := 1; i <= 3; i++ {
		file := fmt.Sprintf("nats/cluster/nats-%d.conf", i)
		opts, err := server.ProcessConfigFile(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		checkServerOptions(t, file, opts)
		want := fmt.Sprintf("nats-%d", i)
		if opts.ServerName != want {
			t.Errorf("%s: server_name %q, want %q", file, opts.ServerName, want)
		}
		names[opts.ServerName] = true
		if opts.Cluster.Name != "jetline" || opts.Cluster.Port != 6222 {
			t.Errorf("%s: cluster %q on port %d, want jetline on 6222", file, opts.Cluster.Name, opts.Cluster.Port)
		}
		var hosts []string
		for _, r := range opts.Routes {
			hosts = append(hosts, r.Hostname())
			if _, ok := project.Services[r.Hostname()]; !ok {
				t.Errorf("%s routes to %s, which is not a compose service", file, r.Host)
			}
		}
		slices.Sort(hosts)
		if !slices.Equal(hosts, []string{"nats-1", "nats-2", "nats-3"}) {
			t.Errorf("%s routes to %v, want nats-1..3", file, hosts)
		}
	}
	if len(names) != 3 {
		t.Errorf("server names not distinct: %v", names)
	}
}

// checkServerOptions checks what every jetline NATS server needs: JetStream
// with a store in the mounted volume, a payload limit that fits the gateway's
// default line, and an explicit fsync choice.
func checkServerOptions(t *testing.T, file string, opts *server.Options) {
	t.Helper()
	if !opts.JetStream || opts.StoreDir != "/data" {
		t.Errorf("%s: JetStream %v with store %q, want enabled with store /data (the compose volume)", file, opts.JetStream, opts.StoreDir)
	}
	if opts.MaxPayload != embeddednats.DefaultMaxPayload {
		t.Errorf("%s: max_payload %d, want %d like the embedded server, so a 1 MiB line fits with its headers", file, opts.MaxPayload, embeddednats.DefaultMaxPayload)
	}
	if opts.HTTPPort != 8222 {
		t.Errorf("%s: monitoring port %d, want 8222 for the healthcheck", file, opts.HTTPPort)
	}
	// The durability choice is spelled out, not left to the default.
	text := configText(t, file)
	if !strings.Contains(text, "sync_interval:") {
		t.Errorf("%s: sync_interval is not set explicitly", file)
	}
	if !opts.SyncAlways {
		t.Errorf("%s: sync_interval is not always", file)
	}
}

// configText returns file with the files it includes appended.
func configText(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, line := range strings.Split(text, "\n") {
		if inc, ok := strings.CutPrefix(strings.TrimSpace(line), "include "); ok {
			text += configText(t, filepath.Join(filepath.Dir(file), strings.Trim(strings.TrimSpace(inc), `"'`)))
		}
	}
	return text
}
