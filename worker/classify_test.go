package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("copy: %w", &pgconn.PgError{Code: code}) }
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, 0},
		{"serialization failure", pg("40001"), Transient},
		{"deadlock", pg("40P01"), Transient},
		{"admin shutdown", pg("57P01"), Transient},
		{"cannot connect now", pg("57P03"), Transient},
		{"too many connections", pg("53300"), Transient},
		{"disk full", pg("53100"), Transient},
		{"connection failure", pg("08006"), Transient},
		{"statement timeout", pg("57014"), Transient},
		{"NUL in jsonb", pg("22P05"), RowData},
		{"invalid json", pg("22P02"), RowData},
		{"not null", pg("23502"), RowData},
		{"unique", pg("23505"), RowData},
		{"stack depth", pg("54001"), RowData},
		{"undefined table", pg("42P01"), Permanent},
		{"permission", pg("42501"), Permanent},
		{"connection refused", fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}), Transient},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), Transient},
		{"unexpected EOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), Transient},
		{"deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), Transient},
		{"canceled", context.Canceled, Transient},
		{"statement completion unknown", pg("40003"), Transient},
		{"crash shutdown", pg("57P02"), Transient},
		{"database dropped", pg("57P04"), Transient},
		{"out of memory", pg("53200"), Transient},
		{"lock not available", pg("55P03"), Transient},
		{"connect error", &pgconn.ConnectError{Config: &pgconn.Config{}}, Transient},
		{"dial timeout", fmt.Errorf("dial: %w", &net.OpError{Op: "dial", Err: syscall.ETIMEDOUT}), Transient},
		{"connection timed out", fmt.Errorf("read: %w", syscall.ETIMEDOUT), Transient},
		{"broken pipe", fmt.Errorf("write: %w", syscall.EPIPE), Transient},
		{"nats timeout", fmt.Errorf("publish: %w", nats.ErrTimeout), Transient},
		{"nats no responders", fmt.Errorf("publish: %w", nats.ErrNoResponders), Transient},
		{"nats reconnecting", nats.ErrConnectionReconnecting, Transient},
		{"no stream response", fmt.Errorf("publish: %w", jetstream.ErrNoStreamResponse), Transient},
		{"async publish timeout", jetstream.ErrAsyncPublishTimeout, Transient},
		{"stalled async publishes", jetstream.ErrTooManyStalledMsgs, Transient},
		{"undefined column", pg("42703"), Permanent},
		{"read-only transaction", pg("25006"), Permanent},
		{"bug", errors.New("expected 4 values, got 3 values"), Permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Classify(tt.err); got != tt.want {
				t.Fatalf("Classify(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}
