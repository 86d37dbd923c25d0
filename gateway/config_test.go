package gateway_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/jetline/jetline/gateway"
	"github.com/jetline/jetline/shared/contract/topology"
)

func parseConfig(t *testing.T, environ map[string]string) gateway.Config {
	t.Helper()
	var cfg gateway.Config
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environ}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, map[string]string{})
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Listen", cfg.Listen, ":4000"},
		{"Acceptors", cfg.Acceptors, 0},
		{"MaxConnections", cfg.MaxConnections, 50000},
		{"MaxLineBytes", cfg.MaxLineBytes, 1 << 20},
		{"ReadBufferBytes", cfg.ReadBufferBytes, 256 << 10},
		{"FrameBytes", cfg.FrameBytes, 128 << 10},
		{"FrameLines", cfg.FrameLines, 1024},
		{"DecodePrograms", cfg.DecodePrograms, 0},
		{"InflightLines", cfg.InflightLines, 65536},
		{"InflightBytes", cfg.InflightBytes, int64(8 << 20)},
		{"InflightTotalBytes", cfg.InflightTotalBytes, int64(256 << 20)},
		{"PublishTimeout", cfg.PublishTimeout, 10 * time.Second},
		{"IdleTimeout", cfg.IdleTimeout, 5 * time.Minute},
		{"ShutdownTimeout", cfg.ShutdownTimeout, 30 * time.Second},
		{"Instance", cfg.Instance, ""},
		{"HealthAddr", cfg.HealthAddr, ":8080"},
		{"TLSListen", cfg.TLSListen, ""},
		{"TLSHandshakeTimeout", cfg.TLSHandshakeTimeout, 10 * time.Second},
		{"AllowCIDRs", cfg.AllowCIDRs, ""},
		{"MaxConnectionsPerIP", cfg.MaxConnectionsPerIP, 0},
		// Nested settings are read from the same variables as the worker's.
		{"NATS.URL", cfg.NATS.URL, "nats://127.0.0.1:4222"},
		{"Stream.MaxBytes", cfg.Stream.MaxBytes, int64(10 << 30)},
		{"Log.Format", cfg.Log.Format, "auto"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if got := parseConfig(t, map[string]string{"NATS_URL": "nats://x:1"}).NATS.URL; got != "nats://x:1" {
		t.Errorf("NATS_URL not read into the nested config: %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		environ map[string]string
		want    string // in the error; "" means valid
	}{
		{"named listeners", map[string]string{"GATEWAY_LISTEN": ":4000, tweets=:4001"}, ""},
		{"empty listen", map[string]string{"GATEWAY_LISTEN": " "}, "GATEWAY_LISTEN is empty"},
		{"bad source", map[string]string{"GATEWAY_LISTEN": "a.b=:4001"}, `source name "a.b" is not valid`},
		{"no port", map[string]string{"GATEWAY_LISTEN": "localhost"}, "is not host:port"},
		{"same port twice", map[string]string{"GATEWAY_LISTEN": ":4000,x=:4000"}, "twice"},
		{"negative acceptors", map[string]string{"GATEWAY_ACCEPTORS": "-1"}, "GATEWAY_ACCEPTORS"},
		{"zero connections", map[string]string{"GATEWAY_MAX_CONNECTIONS": "0"}, "GATEWAY_MAX_CONNECTIONS"},
		{"window smaller than a line", map[string]string{"GATEWAY_INFLIGHT_BYTES": "1000"}, "must be at least GATEWAY_MAX_LINE_BYTES"},
		{"zero inflight lines", map[string]string{"GATEWAY_INFLIGHT_LINES": "0"}, "GATEWAY_INFLIGHT_LINES"},
		{"zero frame bytes", map[string]string{"GATEWAY_FRAME_BYTES": "0"}, "GATEWAY_FRAME_BYTES"},
		{"zero frame lines", map[string]string{"GATEWAY_FRAME_LINES": "0"}, "GATEWAY_FRAME_LINES"},
		{"bad decode programs", map[string]string{"GATEWAY_DECODE_PROGRAMS": "-2"}, "GATEWAY_DECODE_PROGRAMS"},
		{"go decoders only", map[string]string{"GATEWAY_DECODE_PROGRAMS": "-1"}, ""},
		{"window smaller than a frame", map[string]string{"GATEWAY_FRAME_BYTES": "16777216", "GATEWAY_MAX_LINE_BYTES": "1000"}, "must be at least GATEWAY_FRAME_BYTES"},
		{"zero decompressed limit", map[string]string{"GATEWAY_MAX_DECOMPRESSED_BYTES": "0"}, "GATEWAY_MAX_DECOMPRESSED_BYTES"},
		{"tiny read buffer", map[string]string{"GATEWAY_READ_BUFFER_BYTES": "10"}, "GATEWAY_READ_BUFFER_BYTES"},
		{"publish timeout beyond dedupe", map[string]string{"GATEWAY_PUBLISH_TIMEOUT": "90s"}, "half of INGEST_DUPLICATE_WINDOW"},
		{"zero idle timeout", map[string]string{"GATEWAY_IDLE_TIMEOUT": "0s"}, "GATEWAY_IDLE_TIMEOUT"},
		{"bad instance", map[string]string{"GATEWAY_INSTANCE": "has space"}, "GATEWAY_INSTANCE"},
		{"bad health addr", map[string]string{"GATEWAY_HEALTH_ADDR": "8080"}, "GATEWAY_HEALTH_ADDR"},
		{"health disabled", map[string]string{"GATEWAY_HEALTH_ADDR": "off"}, ""},
		{"nested settings are checked", map[string]string{"INGEST_MAX_BYTES": "0"}, "INGEST_MAX_BYTES"},
		{"tls listener without certificate", map[string]string{"GATEWAY_TLS_LISTEN": ":4443"}, "set GATEWAY_TLS_CERT and GATEWAY_TLS_KEY"},
		{"certificate without tls listener", map[string]string{"GATEWAY_TLS_CERT": "c.pem"}, "GATEWAY_TLS_CERT is set but GATEWAY_TLS_LISTEN is empty"},
		{"client CA without tls listener", map[string]string{"GATEWAY_TLS_CLIENT_CA": "ca.pem"}, "GATEWAY_TLS_CLIENT_CA is set but GATEWAY_TLS_LISTEN is empty"},
		{"missing certificate file", map[string]string{"GATEWAY_TLS_LISTEN": ":4443", "GATEWAY_TLS_CERT": "/nonexistent/c.pem", "GATEWAY_TLS_KEY": "/nonexistent/k.pem"}, "GATEWAY_TLS_CERT=/nonexistent/c.pem"},
		{"bad tls listener", map[string]string{"GATEWAY_TLS_LISTEN": "4443"}, "GATEWAY_TLS_LISTEN entry"},
		{"same port plain and tls", map[string]string{"GATEWAY_LISTEN": ":4000", "GATEWAY_TLS_LISTEN": ":4000"}, "in both GATEWAY_LISTEN and GATEWAY_TLS_LISTEN"},
		{"no listener at all", map[string]string{"GATEWAY_LISTEN": "off"}, "set at least one of them"},
		{"allow list", map[string]string{"GATEWAY_ALLOW_CIDRS": "10.0.0.0/8, 192.0.2.7,2001:db8::/32"}, ""},
		{"bad allow list", map[string]string{"GATEWAY_ALLOW_CIDRS": "10.0.0.0/33"}, "GATEWAY_ALLOW_CIDRS entry"},
		{"per-ip cap", map[string]string{"GATEWAY_MAX_CONNECTIONS_PER_IP": "100"}, ""},
		{"negative per-ip cap", map[string]string{"GATEWAY_MAX_CONNECTIONS_PER_IP": "-1"}, "GATEWAY_MAX_CONNECTIONS_PER_IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := parseConfig(t, tt.environ).Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseListen(t *testing.T) {
	t.Parallel()
	got, err := gateway.ParseListen(":4000,tweets=127.0.0.1:4001")
	if err != nil {
		t.Fatal(err)
	}
	want := []gateway.Listener{{Source: topology.DefaultSource, Addr: ":4000"}, {Source: "tweets", Addr: "127.0.0.1:4001"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("ParseListen = %+v, want %+v", got, want)
	}
}

func TestParseAllowCIDRs(t *testing.T) {
	t.Parallel()
	got, err := gateway.ParseAllowCIDRs("10.1.2.3/8, 192.0.2.7, ::ffff:198.51.100.1, 2001:db8::/32")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("198.51.100.1/32"), netip.MustParsePrefix("2001:db8::/32"),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ParseAllowCIDRs = %v, want %v", got, want)
	}
	if got, err := gateway.ParseAllowCIDRs(" "); err != nil || got != nil {
		t.Fatalf("ParseAllowCIDRs(empty) = %v, %v; want nothing (everyone allowed)", got, err)
	}
}

func TestConfigListeners(t *testing.T) {
	t.Parallel()
	cfg := parseConfig(t, map[string]string{"GATEWAY_LISTEN": ":4000", "GATEWAY_TLS_LISTEN": ":4443,tweets=:4444"})
	got, err := cfg.Listeners()
	if err != nil {
		t.Fatal(err)
	}
	want := []gateway.Listener{
		{Source: topology.DefaultSource, Addr: ":4000"},
		{Source: topology.DefaultSource, Addr: ":4443", TLS: true},
		{Source: "tweets", Addr: ":4444", TLS: true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Listeners = %+v, want %+v", got, want)
	}
	cfg.Listen = gateway.ListenOff
	if got, err := cfg.Listeners(); err != nil || len(got) != 2 || !got[0].TLS {
		t.Fatalf("Listeners with GATEWAY_LISTEN=off = %+v, %v; want the two TLS listeners", got, err)
	}
}

func TestDefaultInstanceDiffers(t *testing.T) {
	t.Parallel()
	a, b := gateway.DefaultInstance(), gateway.DefaultInstance()
	if a == b {
		t.Fatalf("two default instances are both %q", a)
	}
	cfg := parseConfig(t, map[string]string{"GATEWAY_INSTANCE": a})
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default instance %q does not validate: %v", a, err)
	}
}
