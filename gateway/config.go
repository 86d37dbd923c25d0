package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/logging"
	"github.com/jetline/jetline/shared/runtime/natsconn"
)

// Config is the gateway program's configuration, read from the environment
// with env.ParseAs[Config]. The NATS, stream and logging settings are shared
// with the worker and read from the same variables.
type Config struct {
	// Listen is a comma-separated list of listeners, each "[source=]addr",
	// e.g. ":4000,tweets=:4001". Lines received on a listener are published
	// for its source; a listener without a name feeds source "default".
	// Defaults to ":4000"; "off" opens no plain listener (TLS only).
	Listen string `env:"GATEWAY_LISTEN" envDefault:":4000"`
	// TLSListen lists the TLS listeners, in the format of Listen, e.g.
	// ":4443,tweets=:4444". They need TLSCert and TLSKey. Defaults to
	// empty: no TLS listener.
	TLSListen string `env:"GATEWAY_TLS_LISTEN"`
	// TLSCert is the PEM file of the TLS listeners' certificate, followed
	// by any intermediate certificates. Defaults to empty.
	TLSCert string `env:"GATEWAY_TLS_CERT"`
	// TLSKey is the PEM file of TLSCert's private key. Defaults to empty.
	TLSKey string `env:"GATEWAY_TLS_KEY"`
	// TLSClientCA is a PEM bundle of the certificate authorities that sign
	// client certificates. When set, TLS clients must present a
	// certificate one of them signed (mutual TLS). Defaults to empty: no
	// client certificate is asked for.
	TLSClientCA string `env:"GATEWAY_TLS_CLIENT_CA"`
	// TLSHandshakeTimeout is how long a TLS client has to finish its
	// handshake; one that takes longer is closed and counted as refused.
	// Defaults to 10s.
	TLSHandshakeTimeout time.Duration `env:"GATEWAY_TLS_HANDSHAKE_TIMEOUT" envDefault:"10s"`
	// TLSCurves lists the key exchanges TLS clients may use, in order of
	// preference, comma-separated: X25519MLKEM768 (post-quantum hybrid),
	// X25519, P256, P384, P521. Empty keeps Go's defaults, which put
	// X25519MLKEM768 first; "X25519,P256" makes each handshake cheaper
	// for the gateway (see the README's connection numbers) at the cost of
	// that protection against recorded traffic being decrypted later.
	// Defaults to empty.
	TLSCurves string `env:"GATEWAY_TLS_CURVES"`
	// AllowCIDRs lists, comma-separated, the networks ("10.0.0.0/8",
	// "2001:db8::/32") and addresses ("192.0.2.7") allowed to connect. A
	// connection from anywhere else is closed as soon as it is accepted,
	// before anything is read. Defaults to empty: everyone is allowed.
	AllowCIDRs string `env:"GATEWAY_ALLOW_CIDRS"`
	// MaxConnectionsPerIP caps the connections open at once from one
	// address; a newcomer over it is closed at once. 0 means no cap
	// beyond MaxConnections, since senders behind one NAT or proxy share
	// an address. Defaults to 0.
	MaxConnectionsPerIP int `env:"GATEWAY_MAX_CONNECTIONS_PER_IP" envDefault:"0"`
	// Acceptors is the number of goroutines accepting connections on each
	// listener; 0 means GOMAXPROCS×4. Defaults to 0.
	Acceptors int `env:"GATEWAY_ACCEPTORS" envDefault:"0"`
	// MaxConnections caps the connections open at once across all
	// listeners. At the cap the gateway stops accepting and newcomers wait
	// in the kernel's listen backlog. Defaults to 50000.
	MaxConnections int `env:"GATEWAY_MAX_CONNECTIONS" envDefault:"50000"`
	// MaxLineBytes is the longest line accepted, without its line ending.
	// Longer lines are counted (too_long in the receipt), logged and
	// skipped; their first 64 KiB and full length go to the dead-letter
	// stream (dead_lettered in the receipt) and the connection carries
	// on. The gateway lowers it to fit the NATS server's maximum payload.
	// Defaults to 1048576 (1 MiB).
	MaxLineBytes int `env:"GATEWAY_MAX_LINE_BYTES" envDefault:"1048576"`
	// ReadBufferBytes is the size of the read buffer a connection takes
	// from a shared pool while data flows (an idle connection holds none);
	// it grows up to MaxLineBytes for longer lines. A frame closes when
	// the bytes read hold no further line, so frames reach FrameBytes only
	// when this is larger. Defaults to 262144 (256 KiB).
	ReadBufferBytes int `env:"GATEWAY_READ_BUFFER_BYTES" envDefault:"262144"`
	// FrameBytes is the payload size at which a frame closes: the gateway
	// publishes consecutive lines of a connection together, as one
	// JetStream message of NDJSON, and JetStream's cost is per message. A
	// line longer than this travels alone. A frame also closes when the
	// bytes read so far hold no further line (so a line sent alone is
	// published at once), at a blank or oversize line, and at the end of
	// the input. It is kept under the NATS server's maximum payload.
	// Defaults to 131072 (128 KiB).
	FrameBytes int `env:"GATEWAY_FRAME_BYTES" envDefault:"131072"`
	// FrameLines is the line count at which a frame closes. Defaults to
	// 1024.
	FrameLines int `env:"GATEWAY_FRAME_LINES" envDefault:"1024"`
	// MaxDecompressedBytes bounds, per connection, the size of a gzip,
	// zstd, xz or bzip2 stream after decompression, so a small stream
	// cannot make the gateway read without end. Going over it ends the
	// connection with an error receipt; the lines before the limit are
	// stored. Uncompressed input is not limited by it. Defaults to
	// 1099511627776 (1 TiB).
	MaxDecompressedBytes int64 `env:"GATEWAY_MAX_DECOMPRESSED_BYTES" envDefault:"1099511627776"`
	// DecodePrograms bounds the connections whose xz input is decoded by
	// the system's xz program at once (xz-utils, when installed: about
	// twice the Go decoder's speed, and several cores on multi-block
	// input); the others, and every connection when xz is not installed,
	// decode in Go. 0 means one per core, at least two; -1 decodes every
	// connection in Go. Defaults to 0.
	DecodePrograms int `env:"GATEWAY_DECODE_PROGRAMS" envDefault:"0"`
	// InflightLines caps, per connection, the lines published but not yet
	// acknowledged by JetStream. When the window is full the gateway stops
	// reading the connection until acknowledgements arrive. A frame larger
	// than the window gets in alone. Defaults to 65536.
	InflightLines int `env:"GATEWAY_INFLIGHT_LINES" envDefault:"65536"`
	// InflightBytes caps, per connection, the payload bytes published but
	// not yet acknowledged. It must be at least MaxLineBytes. Defaults to
	// 8388608 (8 MiB).
	InflightBytes int64 `env:"GATEWAY_INFLIGHT_BYTES" envDefault:"8388608"`
	// InflightTotalBytes caps the payload bytes published but not yet
	// acknowledged across all connections, so the gateway's memory stays
	// bounded however many senders there are; connections wait for room
	// like they do on a full window. It must be at least
	// GATEWAY_INFLIGHT_BYTES. Defaults to 268435456 (256 MiB).
	InflightTotalBytes int64 `env:"GATEWAY_INFLIGHT_TOTAL_BYTES" envDefault:"268435456"`
	// PublishTimeout is how long the gateway waits for JetStream to
	// acknowledge one line before publishing it again (with the same
	// message id, so it is stored once). Defaults to 10s.
	PublishTimeout time.Duration `env:"GATEWAY_PUBLISH_TIMEOUT" envDefault:"10s"`
	// UploadLease is how long the name of a named upload stays held after
	// its gateway stopped renewing it, because it died: the TTL of the
	// topology.UploadsBucket bucket, which every gateway should be given
	// the same. A gateway renews each name it holds every third of it.
	// At least 1s. Defaults to 30s.
	UploadLease time.Duration `env:"GATEWAY_UPLOAD_LEASE" envDefault:"30s"`
	// IdleTimeout closes a connection that sends nothing for this long,
	// after a receipt with status "idle_timeout". Defaults to 5m.
	IdleTimeout time.Duration `env:"GATEWAY_IDLE_TIMEOUT" envDefault:"5m"`
	// ShutdownTimeout bounds a graceful stop: stop accepting, stop reading,
	// wait for acknowledgements, send receipts. Defaults to 30s.
	ShutdownTimeout time.Duration `env:"GATEWAY_SHUTDOWN_TIMEOUT" envDefault:"30s"`
	// Instance names this gateway process in message ids and headers. It
	// must differ between process starts, or JetStream would discard lines
	// of a restarted gateway as duplicates. Defaults to the host name plus
	// a random suffix, chosen at start.
	Instance string `env:"GATEWAY_INSTANCE"`
	// HealthAddr is where /healthz and /readyz are served; "off" disables
	// them. Defaults to ":8080".
	HealthAddr string `env:"GATEWAY_HEALTH_ADDR" envDefault:":8080"`

	// NATS is how to reach NATS (NATS_URL, NATS_CONNECT_TIMEOUT) and with
	// which credentials and TLS settings (NATS_CREDS, NATS_NKEY, NATS_TOKEN,
	// NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY).
	NATS natsconn.Config
	// Stream holds the ingest stream's settings (INGEST_MAX_BYTES,
	// INGEST_DUPLICATE_WINDOW, INGEST_REPLICAS), shared with the worker.
	Stream topology.StreamConfig
	// DLQ holds the dead-letter stream's settings (INGEST_DLQ_MAX_AGE,
	// INGEST_DLQ_MAX_BYTES), shared with the worker. The gateway writes
	// lines over MaxLineBytes there.
	DLQ deadletter.Config
	// Log selects the log format and level (LOG_FORMAT, LOG_LEVEL).
	Log logging.Config
}

// Listener is one entry of [Config.Listen].
type Listener struct {
	// Source names the lines received on Addr: they are published on
	// [topology.Subject](Source). An entry without a name gets
	// [topology.DefaultSource].
	Source string
	// Addr is a host:port to listen on, e.g. ":4000" or "127.0.0.1:0".
	Addr string
	// TLS is set for the listeners of [Config.TLSListen].
	TLS bool
}

// ListenOff is the [Config.Listen] value that opens no plain listener.
const ListenOff = "off"

// Listeners returns every listener: those of [Config.Listen], then those
// of [Config.TLSListen]. It fails if there are none, or if an address is
// listed twice.
func (c Config) Listeners() ([]Listener, error) {
	var plain []Listener
	if strings.TrimSpace(c.Listen) != ListenOff {
		var err error
		if plain, err = ParseListen(c.Listen); err != nil {
			return nil, err
		}
	}
	var secure []Listener
	if strings.TrimSpace(c.TLSListen) != "" {
		var err error
		if secure, err = parseListen(c.TLSListen, "GATEWAY_TLS_LISTEN", true); err != nil {
			return nil, err
		}
	}
	if len(plain) == 0 && len(secure) == 0 {
		return nil, errors.New("GATEWAY_LISTEN is off and GATEWAY_TLS_LISTEN is empty: set at least one of them, e.g. GATEWAY_LISTEN=:4000")
	}
	for _, p := range plain {
		for _, s := range secure {
			if p.Addr == s.Addr && !strings.HasSuffix(p.Addr, ":0") {
				return nil, fmt.Errorf("address %q is in both GATEWAY_LISTEN and GATEWAY_TLS_LISTEN: give the TLS listener its own port", p.Addr)
			}
		}
	}
	return append(plain, secure...), nil
}

// ParseListen parses a [Config.Listen] value such as ":4000,tweets=:4001".
func ParseListen(s string) ([]Listener, error) {
	return parseListen(s, "GATEWAY_LISTEN", false)
}

// parseListen parses the listeners of the variable name, s.
func parseListen(s, name string, tls bool) ([]Listener, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%s is empty: set it to at least one address, e.g. :4000", name)
	}
	var out []Listener
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		l := Listener{Source: topology.DefaultSource, Addr: item, TLS: tls}
		if name, addr, ok := strings.Cut(item, "="); ok {
			l.Source, l.Addr = strings.TrimSpace(name), strings.TrimSpace(addr)
		}
		if err := topology.ValidateSource(l.Source); err != nil {
			return nil, fmt.Errorf("%s entry %q: %w", name, item, err)
		}
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			return nil, fmt.Errorf("%s entry %q: address %q is not host:port (e.g. :4000 or 0.0.0.0:4000): %w", name, item, l.Addr, err)
		}
		if seen[l.Addr] && !strings.HasSuffix(l.Addr, ":0") {
			return nil, fmt.Errorf("%s lists address %q twice: give each listener its own port", name, l.Addr)
		}
		seen[l.Addr] = true
		out = append(out, l)
	}
	return out, nil
}

var instancePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// Validate reports, in terms an operator can act on, everything that is
// wrong with c, including its NATS, stream and log settings.
func (c Config) Validate() error {
	errs := []error{c.validateGateway()}
	if c.PublishTimeout > 0 && c.Stream.DuplicateWindow > 0 && 2*c.PublishTimeout > c.Stream.DuplicateWindow {
		errs = append(errs, fmt.Errorf("GATEWAY_PUBLISH_TIMEOUT (%s) must be at most half of INGEST_DUPLICATE_WINDOW (%s), so a line published again after a lost acknowledgement is still recognised as a duplicate", c.PublishTimeout, c.Stream.DuplicateWindow))
	}
	if health.Enabled(c.HealthAddr) {
		if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
			errs = append(errs, fmt.Errorf("GATEWAY_HEALTH_ADDR %q is not host:port (e.g. :8080), or off to disable: %w", c.HealthAddr, err))
		}
	}
	errs = append(errs, c.NATS.Validate(), c.Stream.Validate(), c.DLQ.Validate(), c.Log.Validate())
	return errors.Join(errs...)
}

// validateGateway checks the settings [New] uses.
func (c Config) validateGateway() error {
	var errs []error
	if _, err := c.Listeners(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.tlsConfig(); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseAllowCIDRs(c.AllowCIDRs); err != nil {
		errs = append(errs, err)
	}
	if c.MaxConnectionsPerIP < 0 {
		errs = append(errs, fmt.Errorf("GATEWAY_MAX_CONNECTIONS_PER_IP must be 0 (no per-address cap) or more (got %d)", c.MaxConnectionsPerIP))
	}
	if c.Acceptors < 0 || c.Acceptors > 4096 {
		errs = append(errs, fmt.Errorf("GATEWAY_ACCEPTORS must be between 0 (automatic: GOMAXPROCS×4) and 4096 (got %d)", c.Acceptors))
	}
	if c.MaxConnections < 1 || c.MaxConnections > 10_000_000 {
		errs = append(errs, fmt.Errorf("GATEWAY_MAX_CONNECTIONS must be between 1 and 10000000 (got %d)", c.MaxConnections))
	}
	if c.MaxLineBytes < 1 || c.MaxLineBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("GATEWAY_MAX_LINE_BYTES must be between 1 and 1073741824 (got %d)", c.MaxLineBytes))
	}
	if c.ReadBufferBytes < 512 || c.ReadBufferBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("GATEWAY_READ_BUFFER_BYTES must be between 512 and 67108864 (got %d); 65536 suits most loads", c.ReadBufferBytes))
	}
	if c.MaxDecompressedBytes < 1 {
		errs = append(errs, fmt.Errorf("GATEWAY_MAX_DECOMPRESSED_BYTES must be positive (got %d); the default is 1099511627776 (1 TiB)", c.MaxDecompressedBytes))
	}
	if c.DecodePrograms < -1 || c.DecodePrograms > 4096 {
		errs = append(errs, fmt.Errorf("GATEWAY_DECODE_PROGRAMS must be between -1 (decode in Go only) and 4096 (got %d); 0 means one per core", c.DecodePrograms))
	}
	if c.FrameBytes < 1 || c.FrameBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("GATEWAY_FRAME_BYTES must be between 1 and 67108864 (got %d); 131072 suits most loads", c.FrameBytes))
	}
	if c.FrameLines < 1 || c.FrameLines > 1_000_000 {
		errs = append(errs, fmt.Errorf("GATEWAY_FRAME_LINES must be between 1 and 1000000 (got %d)", c.FrameLines))
	}
	if c.InflightLines < 1 || c.InflightLines > 10_000_000 {
		errs = append(errs, fmt.Errorf("GATEWAY_INFLIGHT_LINES must be between 1 and 10000000 (got %d)", c.InflightLines))
	}
	if c.InflightBytes < int64(c.MaxLineBytes) {
		errs = append(errs, fmt.Errorf("GATEWAY_INFLIGHT_BYTES (%d) must be at least GATEWAY_MAX_LINE_BYTES (%d) so the longest line fits in the window: raise it or lower the line limit", c.InflightBytes, c.MaxLineBytes))
	}
	if c.InflightBytes < int64(c.FrameBytes) {
		errs = append(errs, fmt.Errorf("GATEWAY_INFLIGHT_BYTES (%d) must be at least GATEWAY_FRAME_BYTES (%d) so a whole frame fits in the window: raise it or lower the frame size", c.InflightBytes, c.FrameBytes))
	}
	if c.InflightTotalBytes < c.InflightBytes {
		errs = append(errs, fmt.Errorf("GATEWAY_INFLIGHT_TOTAL_BYTES (%d) must be at least GATEWAY_INFLIGHT_BYTES (%d): raise it or lower the per-connection window", c.InflightTotalBytes, c.InflightBytes))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, fmt.Errorf("GATEWAY_PUBLISH_TIMEOUT must be positive (got %s)", c.PublishTimeout))
	}
	if c.UploadLease < time.Second {
		errs = append(errs, fmt.Errorf("GATEWAY_UPLOAD_LEASE must be at least 1s (got %s); the default is 30s", c.UploadLease))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("GATEWAY_IDLE_TIMEOUT must be positive (got %s)", c.IdleTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("GATEWAY_SHUTDOWN_TIMEOUT must be positive (got %s)", c.ShutdownTimeout))
	}
	if c.Instance != "" && !instancePattern.MatchString(c.Instance) {
		errs = append(errs, fmt.Errorf("GATEWAY_INSTANCE %q is not valid: use 1 to 128 letters, digits, '.', '_' or '-', or leave it unset for an automatic name", c.Instance))
	}
	return errors.Join(errs...)
}

// DefaultInstance returns a fresh instance name: the host name (reduced to
// letters, digits, '.', '_' and '-') plus a random suffix, so two starts on
// the same host never share message ids.
func DefaultInstance() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	host = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, host)
	if len(host) > 100 {
		host = host[:100]
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms.
	return host + "-" + hex.EncodeToString(b[:])
}
