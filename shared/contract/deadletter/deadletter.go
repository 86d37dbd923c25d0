// Package deadletter is the contract for lines jetline gave up on: the
// dead-letter stream, its subjects and the headers every entry carries.
// Workers write entries for lines that cannot be stored (a permanent error,
// or too many deliveries), the gateway for lines over the maximum length;
// operators read them with `worker dlq` or the stock `nats` CLI and replay
// them into the ingest stream once the cause is fixed.
package deadletter

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetline/jetline/shared/contract/topology"
)

// Names of the dead-letter stream and its subjects.
const (
	// StreamName is the stream that keeps dead letters.
	StreamName = "INGEST_DLQ"
	// SubjectPrefix starts every dead-letter subject: dlq.<source>.<reason>.
	SubjectPrefix = "dlq."
	// StreamSubjects is the subject filter of [StreamName].
	StreamSubjects = SubjectPrefix + ">"
)

// Reasons that are not a transform's or the database's own.
const (
	// ReasonMaxDeliveries: the line failed to store on every delivery
	// allowed (WORKER_MAX_DELIVER); Error holds the last failure.
	ReasonMaxDeliveries = "max_deliveries"
	// ReasonTooLong: the gateway received a line over its maximum length;
	// Data holds its first [TooLongKeep] bytes and Length its full length.
	ReasonTooLong = "too_long"
)

// TooLongKeep is how much of an oversize line the gateway keeps.
const TooLongKeep = 64 << 10

// MaxErrorBytes bounds the error message kept in a header.
const MaxErrorBytes = 4 << 10

// Classes of failure an entry records.
const (
	// ClassPermanent: retrying the same line cannot succeed (bad JSON, a
	// value the column refuses, a line too long).
	ClassPermanent = "permanent"
	// ClassTransient: each attempt failed for a reason that may pass (the
	// database down, a timeout) but the line ran out of deliveries.
	ClassTransient = "transient"
)

// Header names of a dead-letter entry, beside the line's own headers
// (topology.HeaderGateway, HeaderConn, HeaderLine, HeaderReceivedAt), which
// are kept as they were, and topology.HeaderLineID, the line's identity,
// which the writer sets so that a replay keys the row the line would have
// had.
const (
	HeaderReason     = "Jetline-Dlq-Reason"     // reason token, e.g. invalid_json, pg_22003, max_deliveries
	HeaderClass      = "Jetline-Dlq-Class"      // ClassPermanent or ClassTransient
	HeaderError      = "Jetline-Dlq-Error"      // what went wrong, one line, at most MaxErrorBytes
	HeaderSubject    = "Jetline-Dlq-Subject"    // the ingest subject the line was on (ingest.<source>)
	HeaderStreamSeq  = "Jetline-Dlq-Stream-Seq" // the line's sequence in the ingest stream; absent for gateway entries
	HeaderDeliveries = "Jetline-Dlq-Deliveries" // deliveries before giving up; absent for gateway entries
	HeaderBy         = "Jetline-Dlq-By"         // the worker or gateway instance that wrote the entry
	HeaderAt         = "Jetline-Dlq-At"         // when, RFC 3339 with nanoseconds
	HeaderLength     = "Jetline-Dlq-Length"     // the line's full length in bytes (differs from the data when truncated)
)

// Config holds the dead-letter stream's settings.
type Config struct {
	// MaxAge is how long dead letters are kept. Defaults to 720h (30 days).
	MaxAge time.Duration `env:"INGEST_DLQ_MAX_AGE" envDefault:"720h"`
	// MaxBytes caps the stream's size; the oldest entries are dropped past
	// it. Defaults to 1073741824 (1 GiB).
	MaxBytes int64 `env:"INGEST_DLQ_MAX_BYTES" envDefault:"1073741824"`
}

// Validate reports what is wrong with c in terms an operator can act on.
func (c Config) Validate() error {
	var errs []error
	if c.MaxAge <= 0 {
		errs = append(errs, fmt.Errorf("INGEST_DLQ_MAX_AGE must be positive (got %s)", c.MaxAge))
	}
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("INGEST_DLQ_MAX_BYTES must be a positive number of bytes (got %d)", c.MaxBytes))
	}
	return errors.Join(errs...)
}

// Stream returns the JetStream configuration of the dead-letter stream,
// with as many replicas as the ingest stream.
func (c Config) Stream(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "jetline: lines that could not be stored; see `worker dlq`",
		Subjects:    []string{StreamSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.MaxBytes,
		Duplicates:  topology.MinDuplicateWindow,
		Replicas:    replicas,
	}
}

// Subject returns the subject of an entry for a line of source that failed
// for reason. Both are subject-token safe: sources by
// topology.ValidateSource, reasons by [Token].
func Subject(source, reason string) string {
	if source == "" {
		source = "_"
	}
	return SubjectPrefix + source + "." + Token(reason)
}

// Token makes reason safe as one subject token: anything but letters,
// digits, '_' and '-' becomes '_'; an empty reason becomes "unknown".
func Token(reason string) string {
	if reason == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '_'
	}, reason)
}

// Entry is one dead letter.
type Entry struct {
	// Seq is the entry's sequence in the dead-letter stream (read side
	// only).
	Seq uint64
	// Source is the line's source; Subject its ingest subject.
	Source, Subject string
	// Reason is a token (invalid_json, pg_22003, max_deliveries, too_long…),
	// Class ClassPermanent or ClassTransient, Error the message.
	Reason, Class, Error string
	// StreamSeq is the line's ingest stream sequence (0 for gateway
	// entries); Deliveries how often it was delivered (0 likewise).
	StreamSeq, Deliveries uint64
	// By is the instance that wrote the entry; At when.
	By string
	At time.Time
	// Length is the line's full length; Data the bytes kept (all of them,
	// unless Reason is too_long).
	Length int64
	Data   []byte
	// Header holds every header of the entry, the line's own included.
	Header nats.Header
}

// Truncated reports whether Data is only a prefix of the line.
func (e *Entry) Truncated() bool { return int64(len(e.Data)) < e.Length }

// Msg returns the message to publish for e. The line's own headers in
// e.Header are kept; the dead-letter headers are set from e's fields.
// Nats-Msg-Id is set to id (if not empty) so a retried publish is stored
// once.
func (e *Entry) Msg(id string) *nats.Msg {
	h := nats.Header{}
	for k, v := range e.Header {
		// Nats-* headers are instructions to JetStream (de-duplication,
		// expected stream or sequence, rollup, TTL) meant for the line's
		// first publish, not for its dead letter.
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "Nats-") {
			continue
		}
		h[k] = append([]string(nil), v...)
	}
	if id != "" {
		h.Set(jetstream.MsgIDHeader, id)
	}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set(HeaderReason, Token(e.Reason))
	set(HeaderClass, e.Class)
	set(HeaderError, oneLine(e.Error))
	set(HeaderSubject, e.Subject)
	if e.StreamSeq > 0 {
		set(HeaderStreamSeq, strconv.FormatUint(e.StreamSeq, 10))
	}
	if e.Deliveries > 0 {
		set(HeaderDeliveries, strconv.FormatUint(e.Deliveries, 10))
	}
	set(HeaderBy, e.By)
	if !e.At.IsZero() {
		set(HeaderAt, e.At.UTC().Format(time.RFC3339Nano))
	}
	length := e.Length
	if length == 0 {
		length = int64(len(e.Data))
	}
	set(HeaderLength, strconv.FormatInt(length, 10))
	return &nats.Msg{Subject: Subject(topology.Source(e.Subject), e.Reason), Header: h, Data: e.Data}
}

// Decode reads the entry stored as m in the dead-letter stream.
func Decode(m *jetstream.RawStreamMsg) (Entry, error) {
	e := Entry{Seq: m.Sequence, Data: m.Data, Header: m.Header, At: m.Time}
	h := m.Header
	if h == nil || h.Get(HeaderReason) == "" {
		return e, fmt.Errorf("dead letter %d on %s has no %s header: not written by jetline", m.Sequence, m.Subject, HeaderReason)
	}
	e.Reason, e.Class, e.Error = h.Get(HeaderReason), h.Get(HeaderClass), h.Get(HeaderError)
	e.Subject, e.By = h.Get(HeaderSubject), h.Get(HeaderBy)
	e.Source = topology.Source(e.Subject)
	var errs []error
	num := func(k string) uint64 {
		v := h.Get(k)
		if v == "" {
			return 0
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("header %s: %w", k, err))
		}
		return n
	}
	e.StreamSeq, e.Deliveries = num(HeaderStreamSeq), num(HeaderDeliveries)
	e.Length = int64(num(HeaderLength))
	if e.Length == 0 {
		e.Length = int64(len(e.Data))
	}
	if v := h.Get(HeaderAt); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("header %s: %w", HeaderAt, err))
		} else {
			e.At = t
		}
	}
	if err := errors.Join(errs...); err != nil {
		return e, fmt.Errorf("dead letter %d: %w", m.Sequence, err)
	}
	return e, nil
}

// oneLine keeps msg to one line of at most MaxErrorBytes, as a header
// value must be.
func oneLine(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > MaxErrorBytes {
		cut := MaxErrorBytes
		for cut > 0 && msg[cut]&0xC0 == 0x80 {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}
