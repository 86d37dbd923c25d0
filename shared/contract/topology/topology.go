// Package topology is the contract between the gateway and the workers: the
// JetStream stream and consumer they share, the subjects lines are published
// on and the headers every line carries. Both programs call
// [Retry.EnsureStream] at start (and the worker [Retry.EnsureConsumer]), so
// either may start first, and before the servers have formed a cluster:
// [Retry] waits for them.
package topology

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream objects jetline uses.
const (
	// StreamName is the stream that holds every received line until a
	// worker has stored it.
	StreamName = "INGEST"
	// SubjectPrefix starts every ingest subject; the rest is the source name.
	SubjectPrefix = "ingest."
	// StreamSubjects is the subject filter of [StreamName].
	StreamSubjects = SubjectPrefix + ">"
	// ConsumerName is the durable pull consumer all workers share.
	ConsumerName = "workers"
	// DefaultSource is the source of a listener that was given no name.
	DefaultSource = "default"
	// WorkersBucket is the key-value bucket in which each running worker
	// keeps one key, its instance name, refreshed every heartbeat and
	// deleted when it stops; the bucket's TTL drops the key of a worker
	// that died. `worker status` reads it to list the connected workers,
	// which the consumer cannot: it only counts idle fetch requests.
	WorkersBucket = "jetline_workers"
	// UploadsBucket is the key-value bucket in which gateways hold the
	// names of the named uploads they are receiving, one key
	// "<source>/<name>" each, so that two connections never send under
	// one name at once. A gateway renews its keys while their uploads
	// run and deletes them when they end; the bucket's TTL
	// (GATEWAY_UPLOAD_LEASE) drops the keys of a gateway that died.
	UploadsBucket = "jetline_uploads"
)

// Header names set by the gateway on every frame: one JetStream message
// holding a run of consecutive lines of one connection, each followed by
// "\n". They are part of the contract: the worker reads them, and
// operators see them in `nats`.
const (
	// HeaderMsgID is JetStream's de-duplication header. The gateway sets it
	// to the identity of the frame's first line, "<instance>.<conn>.<line>"
	// ([LineIDs]), so a publish retried after a lost PubAck is stored once;
	// a named upload's frame of several lines adds "+<lines>"
	// ([LineIDs.AppendUploadFrame]).
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderGateway names the gateway instance that received the line.
	HeaderGateway = "Jetline-Gateway"
	// HeaderConn is the gateway-local connection id.
	HeaderConn = "Jetline-Conn"
	// HeaderLine is the 1-based number of the frame's first line within
	// the connection's input, counting blank and oversize lines, so a
	// sender can find the line. The frame's k-th line (from 0) is line
	// HeaderLine+k: a frame never spans a blank or oversize line.
	HeaderLine = "Jetline-Line"
	// HeaderLines is the number of lines in the frame. A message without
	// it holds one line, or, from another program, any number of lines
	// (see [FrameLineIDs]).
	HeaderLines = "Jetline-Lines"
	// HeaderReceivedAt is when the gateway read the frame's first line,
	// RFC 3339 with nanoseconds ([time.RFC3339Nano]).
	HeaderReceivedAt = "Jetline-Received-At"
	// HeaderLineID is the identity workers key rows by. A line without it
	// is identified by its [HeaderMsgID], which survives a publish retried
	// after a lost PubAck even when JetStream stored it twice. Workers set
	// it on the dead letters they write and the gateway on its own, and a
	// replay (`worker dlq replay`) carries it back into the ingest stream,
	// so a replayed line keys the same row as the line it was, and a line
	// replayed twice is stored once.
	HeaderLineID = "Jetline-Line-Id"
	// HeaderUpload is the name of the named upload the frame belongs to
	// (the sender's "#jetline upload=NAME" header line); absent for the
	// lines of an unnamed connection. Dead letters keep it.
	HeaderUpload = "Jetline-Upload"
)

// MinDuplicateWindow is the shortest de-duplication window accepted: a
// publish retried after a lost PubAck must still fall inside it.
const MinDuplicateWindow = 2 * time.Minute

// StreamConfig holds the settings of the ingest stream that operators tune.
// Both programs parse it from the same environment variables, so they agree.
type StreamConfig struct {
	// MaxBytes caps the stream's size. When it is reached, publishes are
	// refused (DiscardNew) and the gateway pushes back on senders until
	// workers catch up. Defaults to 10 GiB.
	MaxBytes int64 `env:"INGEST_MAX_BYTES" envDefault:"10737418240"`
	// DuplicateWindow is how long JetStream remembers message ids for
	// de-duplication. Defaults to 2m, the minimum.
	DuplicateWindow time.Duration `env:"INGEST_DUPLICATE_WINDOW" envDefault:"2m"`
	// Replicas is the number of stream replicas (1 for a single server, 3
	// for a cluster). Defaults to 1.
	Replicas int `env:"INGEST_REPLICAS" envDefault:"1"`
}

// Validate reports what is wrong with c in terms an operator can act on.
func (c StreamConfig) Validate() error {
	var errs []error
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("INGEST_MAX_BYTES must be a positive number of bytes (got %d); the stream needs a limit so a full stream pushes back instead of filling the disk", c.MaxBytes))
	}
	if c.DuplicateWindow < MinDuplicateWindow {
		errs = append(errs, fmt.Errorf("INGEST_DUPLICATE_WINDOW must be at least %s (got %s) so retried publishes are de-duplicated", MinDuplicateWindow, c.DuplicateWindow))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("INGEST_REPLICAS must be between 1 and 5 (got %d)", c.Replicas))
	}
	return errors.Join(errs...)
}

// Stream returns the JetStream configuration of the ingest stream.
func (c StreamConfig) Stream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "jetline: received lines waiting to be stored",
		Subjects:    []string{StreamSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    c.MaxBytes,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
	}
}

// EnsureStream creates the ingest stream or updates it to cfg, retried as
// the zero [Retry] does (silently, for up to [DefaultSetupTimeout]). It is
// idempotent and safe to call from every process at once. The programs call
// [Retry.EnsureStream], which logs its waits.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	return Retry{}.EnsureStream(ctx, js, cfg)
}

// EnsureStream creates the ingest stream or updates it to cfg, waiting as r
// says for a server or cluster that cannot take it yet. It is idempotent
// and safe to call from every process at once: they converge on one
// stream.
func (r Retry) EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	return r.CreateOrUpdateStream(ctx, js, cfg.Stream())
}

// ConsumerConfig holds the settings of the shared durable pull consumer.
type ConsumerConfig struct {
	// AckWait is how long a fetched line may stay unacknowledged before
	// JetStream redelivers it.
	AckWait time.Duration
	// MaxAckPending caps lines fetched but not yet acknowledged across all
	// workers; it bounds the work in flight.
	MaxAckPending int
	// MaxDeliver caps deliveries of one line; -1 means no limit.
	MaxDeliver int
}

// Consumer returns the JetStream configuration of the shared consumer.
func (c ConsumerConfig) Consumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "jetline workers",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxAckPending: c.MaxAckPending,
		MaxDeliver:    c.MaxDeliver,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: StreamSubjects,
	}
}

// EnsureConsumer creates the shared durable consumer or updates it to cfg,
// retried as the zero [Retry] does. The worker calls
// [Retry.EnsureConsumer].
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig) (jetstream.Consumer, error) {
	return Retry{}.EnsureConsumer(ctx, js, cfg)
}

// EnsureConsumer creates the shared durable consumer or updates it to cfg,
// waiting as r says for a cluster that cannot take it yet.
func (r Retry) EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig) (jetstream.Consumer, error) {
	return r.CreateOrUpdateConsumer(ctx, js, StreamName, cfg.Consumer())
}

var sourcePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateSource reports whether name can be used as a source: letters,
// digits, '_' and '-', at most 64 characters (it becomes a subject token).
func ValidateSource(name string) error {
	if !sourcePattern.MatchString(name) {
		return fmt.Errorf("source name %q is not valid: use 1 to 64 letters, digits, '_' or '-'", name)
	}
	return nil
}

// Subject returns the subject lines of source are published on.
func Subject(source string) string { return SubjectPrefix + source }

// Source returns the source a subject belongs to, or "" if the subject is
// not an ingest subject.
func Source(subject string) string {
	s, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok {
		return ""
	}
	return s
}
