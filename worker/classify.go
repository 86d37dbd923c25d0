package worker

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Class is how the worker treats a failed database operation.
type Class uint8

const (
	// Transient failures go away on their own: the database is down,
	// restarting, overloaded, or lost a serialization race. The batch is
	// retried later, nothing is acknowledged.
	Transient Class = iota + 1
	// RowData failures are caused by a value in some row (SQLSTATE classes
	// 22 data exception, 23 integrity violation, 54 program limit; a row
	// that no partition of a partitioned table takes is 23514): the batch
	// is split to find the rows, the rest is stored.
	RowData
	// Permanent failures will not go away by retrying the same rows soon
	// and are not caused by one row: a missing table, a permission, a bug.
	// The batch is retried with backoff like a transient failure, but
	// logged as an error for an operator to fix.
	Permanent
)

// String returns "transient", "row_data" or "permanent".
func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case RowData:
		return "row_data"
	case Permanent:
		return "permanent"
	}
	return "unknown"
}

// Classify sorts a database or NATS error into a [Class]. It looks at the
// PostgreSQL SQLSTATE when the server answered, and at the network error
// otherwise; an operation cut short by its context, and a NATS request that
// timed out or found no responder (a stream leader moving, a server
// restarting), are transient. A nil error has no class (0).
func Classify(err error) Class {
	if err == nil {
		return 0
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifyCode(pgErr.Code)
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		pgconn.Timeout(err),
		pgconn.SafeToRetry(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ETIMEDOUT):
		return Transient
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return Transient
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return Transient
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		// The server could not be reached or refused us for now (too many
		// connections, starting up); either way, try again later.
		return Transient
	}
	return Permanent
}

func classifyCode(code string) Class {
	switch {
	case code == "40001", // serialization_failure
		code == "40P01",                 // deadlock_detected
		code == "40003",                 // statement_completion_unknown
		strings.HasPrefix(code, "08"),   // connection exception
		strings.HasPrefix(code, "53"),   // insufficient resources
		strings.HasPrefix(code, "57P0"), // admin/crash shutdown, cannot connect now, database dropped
		code == "57014",                 // query_canceled (statement_timeout)
		code == "55P03":                 // lock_not_available
		return Transient
	case strings.HasPrefix(code, "22"), strings.HasPrefix(code, "23"), strings.HasPrefix(code, "54"):
		return RowData
	}
	return Permanent
}

// isUniqueViolation reports whether err is a unique violation (23505),
// which is what a plain COPY hits when a batch is redelivered.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
