package worker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetline/jetline/shared/contract/deadletter"
	"github.com/jetline/jetline/shared/contract/topology"
	"github.com/jetline/jetline/shared/runtime/health"
	"github.com/jetline/jetline/shared/runtime/logging"
	"github.com/jetline/jetline/shared/runtime/natsconn"
)

// Config is the worker program's configuration, read from the environment
// with env.ParseAs[Config]. Every field has a default that works with
// `make run`.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string rows are written to
	// (DATABASE_URL). pgxpool settings such as pool_max_conns may be added
	// as query parameters, and so may the password and TLS settings
	// (sslmode=verify-full, sslrootcert, sslcert, sslkey); logs show the
	// password as xxxxx. Defaults to
	// postgres://postgres@127.0.0.1:5433/jetline?sslmode=disable, the
	// database `make run` starts.
	DatabaseURL string `env:"DATABASE_URL" envDefault:"postgres://postgres@127.0.0.1:5433/jetline?sslmode=disable"`

	// BatchSize is the most frames (JetStream messages, each one line or a
	// gateway's run of lines) one batch takes and one transaction stores
	// (WORKER_BATCH_SIZE). A batch takes what is waiting, up to this and
	// BatchBytes, and never waits for more: a trickle is stored as it
	// comes, a flood in full batches. Defaults to 500.
	BatchSize int `env:"WORKER_BATCH_SIZE" envDefault:"500"`
	// BatchBytes is the most payload bytes one batch takes
	// (WORKER_BATCH_BYTES); a frame larger than that is taken alone. It
	// bounds the worker's memory whatever the frame size: the batches in
	// hand, the frames consumed ahead of them and the frames JetStream's
	// pull requests may still deliver each hold at most BatchBytes ×
	// WORKER_CONCURRENCY (the last at least the server's max_payload), so
	// a worker holds at most 2 × BatchBytes × WORKER_CONCURRENCY +
	// max(BatchBytes × WORKER_CONCURRENCY, max_payload) of frames and two
	// frames more (a batch takes a frame larger than BatchBytes alone):
	// 24 MiB with the defaults and a max_payload of 8 MiB. Defaults to
	// 4194304 (4 MiB).
	BatchBytes int `env:"WORKER_BATCH_BYTES" envDefault:"4194304"`
	// Concurrency is how many batches one process works on at once, each
	// in its own fetch → transform → store → ack loop
	// (WORKER_CONCURRENCY). Each loop keeps one database backend busy;
	// draining ~6 KB lines on 2 cores, 1 loop stored ~7,200 lines/s, 2
	// ~10,000 and 3 or 4 no more, the database being the bottleneck. Raise
	// it when the database has more cores than the worker. Defaults to 2.
	Concurrency int `env:"WORKER_CONCURRENCY" envDefault:"2"`
	// AckWait is how long JetStream waits for a fetched line's ack before
	// redelivering it to another worker (WORKER_ACK_WAIT). It must cover a
	// fetch plus the slowest transaction. Defaults to 30s.
	AckWait time.Duration `env:"WORKER_ACK_WAIT" envDefault:"30s"`
	// MaxAckPending caps the lines fetched but not yet acknowledged, across
	// all worker processes (WORKER_MAX_ACK_PENDING). 0 means BatchSize ×
	// Concurrency × 8: room for eight worker processes to have all their
	// batches in flight. Defaults to 0.
	MaxAckPending int `env:"WORKER_MAX_ACK_PENDING" envDefault:"0"`
	// RetryBackoff is the delay before a batch whose store failed (the
	// database down, a missing table), or a line whose dead letter could
	// not be written, is redelivered; it doubles with each delivery of a
	// line up to RetryMaxBackoff (WORKER_RETRY_BACKOFF). Defaults to 1s.
	RetryBackoff time.Duration `env:"WORKER_RETRY_BACKOFF" envDefault:"1s"`
	// RetryMaxBackoff caps the redelivery delay
	// (WORKER_RETRY_MAX_BACKOFF). Defaults to 1m.
	RetryMaxBackoff time.Duration `env:"WORKER_RETRY_MAX_BACKOFF" envDefault:"1m"`
	// MaxDeliver is how many times a line is delivered before a failed
	// store gives up on it (WORKER_MAX_DELIVER): on that delivery the line
	// goes to the dead-letter stream with reason max_deliveries and the
	// last error, and is terminated. Lines the transform or the database
	// refuse go there at once, whatever this says. Defaults to 10.
	MaxDeliver int `env:"WORKER_MAX_DELIVER" envDefault:"10"`
	// Table is the table raw lines land in, "name" or "schema.name"; it is
	// created if missing (WORKER_TABLE). Defaults to events.
	Table string `env:"WORKER_TABLE" envDefault:"events"`
	// Pipelines lists pipeline spec files (YAML), comma-separated
	// (WORKER_PIPELINES). Each sends the lines of its source to a table of
	// its own, filtered and cleaned as it declares; lines of sources
	// without a pipeline land raw in Table. The worker refuses to start if
	// a spec has mistakes; `worker check-spec FILE` lists them. Defaults
	// to none.
	Pipelines []string `env:"WORKER_PIPELINES"`
	// ShutdownTimeout bounds how long the worker spends, once asked to
	// stop, finishing and committing the batches in hand
	// (WORKER_SHUTDOWN_TIMEOUT). Defaults to 30s.
	ShutdownTimeout time.Duration `env:"WORKER_SHUTDOWN_TIMEOUT" envDefault:"30s"`
	// HealthAddr is where /healthz and /readyz are served; "off" disables
	// them (WORKER_HEALTH_ADDR). Defaults to :8081.
	HealthAddr string `env:"WORKER_HEALTH_ADDR" envDefault:":8081"`
	// Instance names this process in logs and in its NATS connection
	// (WORKER_INSTANCE). Defaults to the host name; see
	// [Config.InstanceName].
	Instance string `env:"WORKER_INSTANCE"`

	// NATS is how to reach NATS (NATS_URL, NATS_CONNECT_TIMEOUT) and with
	// which credentials and TLS settings (NATS_CREDS, NATS_NKEY, NATS_TOKEN,
	// NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY).
	NATS natsconn.Config
	// Stream holds the ingest stream's settings (INGEST_*), which the
	// worker applies at start like the gateway does.
	Stream topology.StreamConfig
	// DLQ holds the dead-letter stream's settings (INGEST_DLQ_*), which
	// both programs apply at start.
	DLQ deadletter.Config
	// Log selects the log format and level (LOG_FORMAT, LOG_LEVEL).
	Log logging.Config
}

// Validate reports, in terms an operator can act on, everything that is
// wrong with c.
func (c Config) Validate() error {
	var errs []error
	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		errs = append(errs, fmt.Errorf("DATABASE_URL is not a usable PostgreSQL connection string (use e.g. postgres://user@host:5432/db?sslmode=disable): %w", err))
	}
	if c.BatchSize < 1 || c.BatchSize > 10000 {
		errs = append(errs, fmt.Errorf("WORKER_BATCH_SIZE must be between 1 and 10000 (got %d); 500 suits lines of a few KB", c.BatchSize))
	}
	if c.BatchBytes < 1<<10 || c.BatchBytes > 1<<30 {
		errs = append(errs, fmt.Errorf("WORKER_BATCH_BYTES must be between 1024 and 1073741824 (got %d); 4194304 (4 MiB) suits most loads", c.BatchBytes))
	}
	if c.Concurrency < 1 || c.Concurrency > 64 {
		errs = append(errs, fmt.Errorf("WORKER_CONCURRENCY must be between 1 and 64 (got %d); 2 keeps one database busy", c.Concurrency))
	}
	if c.AckWait < 2*time.Second {
		errs = append(errs, fmt.Errorf("WORKER_ACK_WAIT must be at least 2s (got %s), or lines are redelivered while still being stored", c.AckWait))
	}
	if c.MaxAckPending != 0 && c.MaxAckPending < c.BatchSize*c.Concurrency {
		errs = append(errs, fmt.Errorf("WORKER_MAX_ACK_PENDING (%d) must be 0 (automatic) or at least WORKER_BATCH_SIZE × WORKER_CONCURRENCY (%d), or batches cannot fill", c.MaxAckPending, c.BatchSize*c.Concurrency))
	}
	if c.RetryBackoff <= 0 {
		errs = append(errs, fmt.Errorf("WORKER_RETRY_BACKOFF must be positive (got %s), e.g. 1s", c.RetryBackoff))
	}
	if c.RetryMaxBackoff < c.RetryBackoff {
		errs = append(errs, fmt.Errorf("WORKER_RETRY_MAX_BACKOFF (%s) must be at least WORKER_RETRY_BACKOFF (%s)", c.RetryMaxBackoff, c.RetryBackoff))
	}
	if c.MaxDeliver < 1 || c.MaxDeliver > maxMaxDeliver {
		errs = append(errs, fmt.Errorf("WORKER_MAX_DELIVER must be between 1 and %d (got %d); 10 with the default backoff gives a line about 5 minutes to be stored", maxMaxDeliver, c.MaxDeliver))
	}
	if _, _, err := ParseTableName(c.Table); err != nil {
		errs = append(errs, fmt.Errorf("WORKER_TABLE: %w", err))
	}
	for _, p := range c.Pipelines {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, fmt.Errorf("WORKER_PIPELINES has an empty entry (got %q); list spec files separated by commas, e.g. deploy/pipelines/tweets.yaml", strings.Join(c.Pipelines, ",")))
			break
		}
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("WORKER_SHUTDOWN_TIMEOUT must be positive (got %s), e.g. 30s", c.ShutdownTimeout))
	}
	if health.Enabled(c.HealthAddr) {
		if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
			errs = append(errs, fmt.Errorf("WORKER_HEALTH_ADDR %q is not host:port (e.g. :8081), or off to disable: %w", c.HealthAddr, err))
		}
	}
	if err := c.NATS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.DLQ.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Log.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// InstanceName returns Instance, or the host name when it is empty, or
// "worker" when even that is unknown.
func (c Config) InstanceName() string {
	if c.Instance != "" {
		return c.Instance
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "worker"
}

// EffectiveMaxAckPending returns MaxAckPending, or its automatic value
// BatchSize × Concurrency × 8 when it is 0.
func (c Config) EffectiveMaxAckPending() int {
	if c.MaxAckPending != 0 {
		return c.MaxAckPending
	}
	return c.BatchSize * c.Concurrency * 8
}

// maxMaxDeliver bounds WORKER_MAX_DELIVER: beyond it a line the database
// keeps refusing would hold its place for days.
const maxMaxDeliver = 1000

// spareDeliveries is how many deliveries the consumer allows beyond
// MaxDeliver. A line on its last delivery whose store fails is
// dead-lettered; if writing the dead letter fails too (NATS trouble at that
// moment), the line is handed back, and without spare deliveries JetStream
// would never deliver it again, leaving it stuck in the stream.
const spareDeliveries = 3

// Consumer returns the settings of the shared durable consumer. A line
// whose store keeps failing is dead-lettered by the worker on delivery
// MaxDeliver; the consumer allows [spareDeliveries] more, for lines whose
// dead letter could not be written.
func (c Config) Consumer() topology.ConsumerConfig {
	return topology.ConsumerConfig{
		AckWait:       c.AckWait,
		MaxAckPending: c.EffectiveMaxAckPending(),
		MaxDeliver:    c.MaxDeliver + spareDeliveries,
	}
}

// Presence returns the settings of the worker's presence in the
// topology.WorkersBucket bucket: the default heartbeat and TTL, and as
// many replicas as the ingest stream.
func (c Config) Presence() PresenceOptions {
	return PresenceOptions{Heartbeat: DefaultHeartbeat, TTL: DefaultPresenceTTL, Replicas: c.Stream.Replicas}
}

// Options returns the worker's own settings; dead letters are published
// through deadLetters, normally the program's JetStream context.
func (c Config) Options(deadLetters DeadLetterPublisher) Options {
	return Options{
		BatchSize:       c.BatchSize,
		BatchBytes:      c.BatchBytes,
		Concurrency:     c.Concurrency,
		RetryBackoff:    c.RetryBackoff,
		RetryMaxBackoff: c.RetryMaxBackoff,
		ShutdownTimeout: c.ShutdownTimeout,
		WriteTimeout:    c.AckWait * 3 / 4,
		DeadLetters:     deadLetters,
		MaxDeliver:      c.MaxDeliver,
		Instance:        c.InstanceName(),
	}
}
